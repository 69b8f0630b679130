/**
 * The start path's sync-config check: configs with errors are refused, warnings are reported but never block;
 * Sync Streams configs are served.
 */
import { describe, expect, test } from 'vitest';
import { assertValidSyncConfig, checkSyncConfig, ConfigError } from '../src/index.js';

const STREAMS = `config:
  edition: 3
streams:
  mine:
    auto_subscribe: true
    query: SELECT * FROM boards WHERE owner_id = auth.user_id()
`;

describe('sync config gate', () => {
  test('a valid streams config passes', () => {
    expect(() => assertValidSyncConfig(STREAMS)).not.toThrow();
    expect(checkSyncConfig(STREAMS).problems).toEqual([]);
  });

  test('a streams config with an error is refused, naming the stream', () => {
    let thrown: unknown;
    try {
      assertValidSyncConfig(STREAMS.replace('auth.user_id()', 'auth.user_id() LIMIT 1'));
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as ConfigError).problems).toEqual([
      expect.stringMatching(/^sync config: streams\.mine\.query .*LIMIT is not supported/)
    ]);
  });

  test('bucket definitions still pass; warnings are returned separately and do not block', () => {
    const rules = 'config:\n  edition: 2\nbucket_definitions:\n  g:\n    data: [SELECT * FROM lists]\n';
    expect(() => assertValidSyncConfig(rules)).not.toThrow();
    const { problems, warnings } = checkSyncConfig(rules);
    expect(problems).toEqual([]);
    expect(warnings).toEqual([expect.stringMatching(/^sync config: .*not apply yet/)]);
  });
});
