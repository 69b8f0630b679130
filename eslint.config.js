// One ESLint config for the whole workspace (flat config). Type-aware rules need each package's tsconfig, which the
// project service finds on its own. Every package's `lint` script runs `eslint .` from its folder with this file.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['**/node_modules/**', '**/dist/**', '**/.turbo/**', '**/.syncpoint/**', '**/.tmp/**', '**/coverage/**']
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: {
          // The root vitest.shared.ts belongs to no package; it is checked with the base compiler options.
          allowDefaultProject: ['vitest.shared.ts'],
          defaultProject: 'tsconfig.base.json'
        },
        tsconfigRootDir: import.meta.dirname
      }
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }
      ],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      // Prettier decides the line breaks and puts a `[Symbol.asyncIterator]()` after a long call on its own line;
      // with no ASI-prone statement starts (Prettier keeps semicolons) the rule only flags its layout
      // (eslint-config-prettier turns it off for the same reason).
      'no-unexpected-multiline': 'off'
    }
  },
  {
    // Plain JS config files are not part of any tsconfig project.
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    extends: [tseslint.configs.disableTypeChecked]
  }
);
