import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';

/**
 * SSRF protection for `jwks_uri` fetches (PROTOCOL §3.3 `client_auth.jwks_reject_ip_ranges`, deprecated
 * `block_local_jwks`): a JWKS URL whose host resolves into a rejected range is never fetched. `local` stands for
 * loopback, private, link-local, CGNAT and unspecified addresses, where an internal service could answer.
 */
const LOCAL_RANGES = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '::/128',
  '::1/128',
  'fc00::/7',
  'fe80::/10'
];

export type JwksAddressGuard = (uri: string) => Promise<void>;

/** Parse the configured ranges; throws with the offending entry, so a typo fails at start, not at fetch time. */
export function createJwksAddressGuard(ranges: readonly string[]): JwksAddressGuard | undefined {
  if (ranges.length === 0) return undefined;
  const blockList = new BlockList();
  for (const range of ranges.flatMap((entry) => (entry === 'local' ? LOCAL_RANGES : [entry]))) {
    const [address = '', prefix] = range.split('/');
    const family = isIP(address);
    if (family === 0)
      throw new Error(`jwks_reject_ip_ranges: "${range}" is not an IP address, a CIDR range or "local"`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) {
      blockList.addAddress(address, type);
      continue;
    }
    const bits = /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN;
    if (!(bits <= (family === 4 ? 32 : 128)))
      throw new Error(`jwks_reject_ip_ranges: "${range}" has an invalid prefix length`);
    blockList.addSubnet(address, bits, type);
  }
  return async (uri) => {
    const host = new URL(uri).hostname.replace(/^\[(.*)\]$/, '$1');
    const addresses = isIP(host)
      ? [{ address: host, family: isIP(host) }]
      : await lookup(host, { all: true, verbatim: true });
    for (const { address, family } of addresses) {
      // An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is checked as the IPv4 address it reaches.
      const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
      const blocked = mapped
        ? blockList.check(mapped, 'ipv4')
        : blockList.check(address, family === 4 ? 'ipv4' : 'ipv6');
      if (blocked) throw new Error(`${uri} resolves to ${address}, which client_auth.jwks_reject_ip_ranges rejects`);
    }
  };
}
