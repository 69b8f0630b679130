import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkClientId, fullUserId } from '../src/routes/checkpoint-routes.js';

describe('fullUserId (PROTOCOL §4.2)', () => {
  it('keeps the reference key for subs without a slash', () => {
    expect(fullUserId('alice', undefined)).toBe('alice');
    expect(fullUserId('alice', 'phone')).toBe('alice/phone');
  });

  it('gives a sub with a slash and no client id a key no (user, client) pair can have', () => {
    expect(fullUserId('alice/phone', undefined)).toBe('alice/phone/');
    expect(fullUserId('alice/phone', undefined)).not.toBe(fullUserId('alice', 'phone'));
  });

  it('is one-to-one over every sub and every accepted client id', () => {
    // Small alphabets with '/' make collisions likely if there were any.
    const text = fc.string({ unit: fc.constantFrom('a', 'b', '/'), maxLength: 6 });
    const caller = fc
      .record({ user: text, client: fc.option(text, { nil: undefined }) })
      .filter(({ client }) => client === undefined || checkClientId(client, true).length === 0);
    fc.assert(
      fc.property(caller, caller, (a, b) => {
        const same = a.user === b.user && a.client === b.client;
        expect(fullUserId(a.user, a.client) === fullUserId(b.user, b.client)).toBe(same);
      }),
      { numRuns: 5000 }
    );
  });
});
