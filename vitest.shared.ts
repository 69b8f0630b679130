import { defineConfig } from 'vitest/config';

/** Every package tests its sibling packages from source, through the `@syncpoint/source` export condition. */
export function packageTestConfig(options: { testTimeout?: number } = {}) {
  return defineConfig({
    resolve: { conditions: ['@syncpoint/source'] },
    ssr: { resolve: { conditions: ['@syncpoint/source'] } },
    test: {
      include: ['test/**/*.test.ts'],
      testTimeout: options.testTimeout ?? 30_000,
      hookTimeout: 60_000,
      pool: 'forks'
    }
  });
}
