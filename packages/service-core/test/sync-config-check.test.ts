/**
 * The start path's sync-config gate: a Sync Streams config is refused (streams are validated but not served
 * yet), so no service starts that would silently ignore its streams; warnings are reported but never block.
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
  test('a valid streams config is refused at start with "validated but not served yet"', () => {
    let thrown: unknown;
    try {
      assertValidSyncConfig(STREAMS);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as ConfigError).problems).toEqual([
      expect.stringMatching(/^sync config: YAML line 3, column 1: Sync Streams are validated but not served yet/)
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
