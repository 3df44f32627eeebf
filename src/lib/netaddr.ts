/**
 * What an IP address is, for rule P3 (where a registry may send us). PURE: no I/O, no DNS.
 *
 * Input is an address as `new URL()` leaves a hostname (dotted-quad IPv4, compressed IPv6 in
 * brackets) or as `dns.lookup` returns it; the odd IPv4 spellings (`2130706433`, `0x7f.1`,
 * `0177.0.0.1`) are normalised by the URL parser before they get here, so this parser is strict
 * and anything else is "not an address" (a name, to be resolved).
 *
 * The ranges are IANA's special-purpose registries, coarsened to the classes P3 names. Forms that
 * embed an IPv4 address (mapped, compatible, translated, NAT64, 6to4) take the class of the
 * embedded address, because that is where the kernel or a translator delivers the packets.
 */

export type AddressClass =
  | 'public'
  | 'loopback'
  | 'private' // RFC 1918, CGNAT 100.64/10, ULA fc00::/7, site-local fec0::/10, local-use NAT64
  | 'link-local'
  | 'unspecified' // 0.0.0.0/8, ::
  | 'multicast'
  | 'broadcast'
  | 'reserved'; // documentation, benchmarking, IETF, 240/4, unallocated IPv6, deprecated forms

export interface ClassifiedAddress {
  class: AddressClass;
  /** The address in canonical text (`::ffff:7f00:1`, no brackets). */
  address: string;
  /** For an address that embeds IPv4: the form and the embedded address, e.g. `IPv4-mapped 127.0.0.1`. */
  embedded?: string;
}

interface Range4 {
  net: number;
  bits: number;
  class: AddressClass;
}

const V4: readonly Range4[] = [
  r4('0.0.0.0', 8, 'unspecified'),
  r4('10.0.0.0', 8, 'private'),
  r4('100.64.0.0', 10, 'private'),
  r4('127.0.0.0', 8, 'loopback'),
  r4('169.254.0.0', 16, 'link-local'),
  r4('172.16.0.0', 12, 'private'),
  r4('192.0.0.0', 24, 'reserved'),
  r4('192.0.2.0', 24, 'reserved'),
  r4('192.88.99.0', 24, 'reserved'),
  r4('192.168.0.0', 16, 'private'),
  r4('198.18.0.0', 15, 'reserved'),
  r4('198.51.100.0', 24, 'reserved'),
  r4('203.0.113.0', 24, 'reserved'),
  r4('224.0.0.0', 4, 'multicast'),
  r4('255.255.255.255', 32, 'broadcast'),
  r4('240.0.0.0', 4, 'reserved'),
];

function r4(net: string, bits: number, cls: AddressClass): Range4 {
  return { net: v4Number(parseIPv4(net) ?? [0, 0, 0, 0]), bits, class: cls };
}

function v4Number(b: readonly number[]): number {
  return (((b[0] ?? 0) << 24) | ((b[1] ?? 0) << 16) | ((b[2] ?? 0) << 8) | (b[3] ?? 0)) >>> 0;
}

/** Strict dotted-quad: four decimal parts 0–255, no leading zeros (which some parsers read as octal). */
function parseIPv4(s: string): number[] | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

/** RFC 4291 text form, with an optional trailing dotted quad; returns 8 groups. A `%zone` is ignored. */
function parseIPv6(text: string): number[] | undefined {
  let s = text.split('%')[0] ?? '';
  const groups: number[] = [];
  const tail = /:(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  let v4Tail: number[] | undefined;
  if (tail !== null) {
    v4Tail = parseIPv4(tail[1] ?? '');
    if (v4Tail === undefined) return undefined;
    s = `${s.slice(0, tail.index)}:0:0`; // two placeholder groups, replaced below
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const side = (h: string | undefined): number[] | undefined => {
    if (h === undefined || h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = side(halves[0]);
  const rest = halves.length === 2 ? side(halves[1]) : [];
  if (head === undefined || rest === undefined) return undefined;
  if (halves.length === 2) {
    const fill = 8 - head.length - rest.length;
    if (fill < 1) return undefined;
    groups.push(...head, ...new Array<number>(fill).fill(0), ...rest);
  } else {
    if (head.length !== 8) return undefined;
    groups.push(...head);
  }
  if (v4Tail !== undefined) {
    groups[6] = ((v4Tail[0] ?? 0) << 8) | (v4Tail[1] ?? 0);
    groups[7] = ((v4Tail[2] ?? 0) << 8) | (v4Tail[3] ?? 0);
  }
  return groups;
}

function classify4(b: readonly number[]): AddressClass {
  const n = v4Number(b);
  for (const r of V4) {
    const mask = r.bits === 0 ? 0 : (0xffffffff << (32 - r.bits)) >>> 0;
    if (((n & mask) >>> 0) === r.net) return r.class;
  }
  return 'public';
}

function v4Of(hi: number, lo: number): number[] {
  return [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff];
}

function text6(g: readonly number[]): string {
  // Canonical compression (RFC 5952): the longest run of two or more zero groups becomes `::`.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

function embedded(form: string, v4: number[], ifPublic: AddressClass): { class: AddressClass; embedded: string } {
  const inner = classify4(v4);
  return { class: inner === 'public' ? ifPublic : inner, embedded: `${form} ${v4.join('.')}` };
}

function classify6(g: readonly number[]): { class: AddressClass; embedded?: string } {
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = g;
  const zeroTo = (k: number): boolean => g.slice(0, k).every((x) => x === 0);
  if (zeroTo(8)) return { class: 'unspecified' };
  if (zeroTo(7) && g7 === 1) return { class: 'loopback' };
  if (zeroTo(5) && g5 === 0xffff) return embedded('IPv4-mapped', v4Of(g6, g7), 'public');
  if (zeroTo(6)) return embedded('IPv4-compatible', v4Of(g6, g7), 'reserved');
  if (zeroTo(4) && g4 === 0xffff && g5 === 0) return embedded('IPv4-translated', v4Of(g6, g7), 'public');
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) return embedded('NAT64', v4Of(g6, g7), 'public');
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 1) return { class: 'private' }; // local-use NAT64, RFC 8215
  if (g0 === 0x2002) return embedded('6to4', v4Of(g1, g2), 'public');
  if ((g0 & 0xfe00) === 0xfc00) return { class: 'private' };
  if ((g0 & 0xffc0) === 0xfe80) return { class: 'link-local' };
  if ((g0 & 0xffc0) === 0xfec0) return { class: 'private' };
  if ((g0 & 0xff00) === 0xff00) return { class: 'multicast' };
  if ((g0 & 0xe000) !== 0x2000) return { class: 'reserved' }; // outside global unicast 2000::/3
  if (g0 === 0x2001 && g1 < 0x200) return { class: 'reserved' }; // IETF protocol assignments (Teredo, ORCHID…)
  if (g0 === 0x2001 && g1 === 0xdb8) return { class: 'reserved' }; // documentation
  if (g0 === 0x3fff && g1 < 0x1000) return { class: 'reserved' }; // 3fff::/20 documentation (RFC 9637)
  return { class: 'public' };
}

/**
 * Classifies an IP address literal (`10.0.0.1`, `::ffff:7f00:1`, `[fe80::1]`), or returns
 * undefined when `text` is not one (a host name).
 */
export function classifyAddress(text: string): ClassifiedAddress | undefined {
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  const v4 = parseIPv4(bare);
  if (v4 !== undefined) return { class: classify4(v4), address: v4.join('.') };
  if (!bare.includes(':')) return undefined;
  const v6 = parseIPv6(bare);
  if (v6 === undefined) return undefined;
  return { address: text6(v6), ...classify6(v6) };
}

/** `private address 10.0.0.1`, `loopback address ::ffff:7f00:1 (IPv4-mapped 127.0.0.1)`. */
export function describeAddress(a: ClassifiedAddress): string {
  return `${a.class} address ${a.address}${a.embedded !== undefined ? ` (${a.embedded})` : ''}`;
}

/**
 * Whether two host addresses a port is bound or mapped on can collide: absent, empty, 0.0.0.0
 * and :: stand for every address (a hostIP left out, a socket bound to the wildcard).
 */
export function hostIPsOverlap(a: string | undefined, b: string | undefined): boolean {
  const wild = (x: string | undefined): boolean => x === undefined || x === '' || x === '0.0.0.0' || x === '::';
  return wild(a) || wild(b) || a === b;
}
