import { describe, expect, it } from 'vitest';
import { decodeCheckpointLine } from '../src/fetch-command.js';

describe('syncpoint fetch: the checkpoint line through the codecs', () => {
  it('accepts ids up to 2^63−1 and signed or unsigned 32-bit checksums', () => {
    expect(
      decodeCheckpointLine({
        last_op_id: '9223372036854775807',
        write_checkpoint: '42',
        buckets: [
          { bucket: 'global[]', checksum: -1180923811, count: 1300, priority: 3 },
          { bucket: 'other[]', checksum: 4294967295, count: 1 }
        ]
      })
    ).toEqual({
      last_op_id: '9223372036854775807',
      write_checkpoint: '42',
      buckets: [
        { bucket: 'global[]', checksum: -1180923811, count: 1300, priority: 3 },
        { bucket: 'other[]', checksum: 4294967295, count: 1 }
      ]
    });
  });

  it('reports every malformed field with the codec message', () => {
    expect(() =>
      decodeCheckpointLine({
        last_op_id: '9223372036854775808',
        write_checkpoint: 7,
        buckets: [{ bucket: 'b', checksum: 2 ** 32, count: 1 }]
      })
    ).toThrow(
      'malformed checkpoint line: last_op_id: Expected op_id between 0 and 9223372036854775807; ' +
        'write_checkpoint: expected a decimal string; ' +
        'buckets[0].checksum: Expected a checksum: an integer between -2147483648 and 4294967295'
    );
    expect(() => decodeCheckpointLine({ last_op_id: 5, buckets: null })).toThrow(
      'last_op_id: expected a decimal string; buckets: expected an array'
    );
  });
});
