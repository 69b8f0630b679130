import { describe, expect, it } from 'vitest';
import { createJwksAddressGuard } from '../src/auth/jwks-address-guard.js';
import { ModuleRegistry, parseConfig } from '../src/index.js';

describe('jwks_reject_ip_ranges', () => {
  it('is off without ranges', () => {
    expect(createJwksAddressGuard([])).toBeUndefined();
  });

  it.each([
    'http://127.0.0.1/jwks.json',
    'http://10.1.2.3/jwks.json',
    'http://172.31.255.255/jwks.json',
    'http://192.168.0.1/jwks.json',
    'http://169.254.169.254/latest/meta-data',
    'http://100.64.0.1/jwks.json',
    'http://0.0.0.0/jwks.json',
    'http://[::1]/jwks.json',
    'http://[fd00::1]/jwks.json',
    'http://[fe80::1]/jwks.json',
    'http://[::ffff:127.0.0.1]/jwks.json',
    'http://[::ffff:7f00:1]/jwks.json',
    'http://localhost:8080/jwks.json'
  ])('local rejects %s', async (uri) => {
    await expect(createJwksAddressGuard(['local'])!(uri)).rejects.toThrow(/jwks_reject_ip_ranges/);
  });

  it.each(['http://8.8.8.8/jwks.json', 'http://172.32.0.1/jwks.json', 'http://[2001:db8::1]/jwks.json'])(
    'local allows %s',
    async (uri) => {
      await expect(createJwksAddressGuard(['local'])!(uri)).resolves.toBeUndefined();
    }
  );

  it('takes single addresses and CIDR ranges of both families', async () => {
    const guard = createJwksAddressGuard(['203.0.113.7', '2001:db8::/32'])!;
    await expect(guard('https://203.0.113.7/jwks')).rejects.toThrow(/203\.0\.113\.7/);
    await expect(guard('https://203.0.113.8/jwks')).resolves.toBeUndefined();
    await expect(guard('https://[2001:db8:1::5]/jwks')).rejects.toThrow();
  });

  it.each(['localnet', '10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0/8', '10.0.0.0/x'])(
    'refuses the entry %s at config time',
    async (entry) => {
      const config = `client_auth:\n  audience: [x]\n  jwks_reject_ip_ranges: ["${entry}"]\n`;
      await expect(
        parseConfig(config, { source: 'test', configDir: process.cwd(), registry: new ModuleRegistry() })
      ).rejects.toThrow(/jwks_reject_ip_ranges/);
    }
  );
});
