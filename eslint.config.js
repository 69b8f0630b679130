// One ESLint config for the whole workspace (flat config). Type-aware rules need each package's tsconfig, which the
// project service finds on its own. Every package's `lint` script runs `eslint .` from its folder with this file.
import js from '@eslint/js';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
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
    // No import circles within a package (issue 13): types and values flow one way. Only relative imports are
    // followed: a package's siblings are reached through their entry points, and the workspace graph has no circle.
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      // Sources import each other as `./file.js` (NodeNext); the resolver finds the `.ts` file behind it.
      'import-x/resolver-next': [createNodeResolver({ extensionAlias: { '.js': ['.ts', '.js'] } })],
      // Without these the rule skips `.ts` files when it reads the imported module.
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] }
    },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }]
    }
  },
  {
    // Plain JS config files are not part of any tsconfig project.
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    extends: [tseslint.configs.disableTypeChecked]
  }
);
