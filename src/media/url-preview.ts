import { lookup } from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP } from 'node:net';
import { MatrixError } from '../errors.ts';

/**
 * URL previews (GET /media/preview_url): fetch a page and read its Open Graph tags. The server
 * must not become a way into the networks it sits in, so every name is resolved first and the
 * request is refused when any of its addresses is loopback, private, link-local, shared,
 * multicast or otherwise not public (unless listed in `url_preview_allow`); the connection then
 * goes to an address that was checked (no second resolution that a rebinding name could change).
 * Redirects are followed at most 3 times, each checked again. The answer is read up to
 * `maxBytes` and at most `timeoutMs` in all.
 */
export interface PreviewOptions {
  allow: string[];
  maxBytes: number;
  timeoutMs: number;
}

const MAX_REDIRECTS = 3;
const MAX_TAGS = 50;
const MAX_VALUE = 1000;

/** Address ranges a preview never reaches (IANA special-purpose registries, v4 and v6). */
function blockedRanges(): BlockList {
  const b = new BlockList();
  const v4: Array<[string, number]> = [
    ['0.0.0.0', 8],
    ['10.0.0.0', 8],
    ['100.64.0.0', 10],
    ['127.0.0.0', 8],
    ['169.254.0.0', 16],
    ['172.16.0.0', 12],
    ['192.0.0.0', 24],
    ['192.0.2.0', 24],
    ['192.88.99.0', 24],
    ['192.168.0.0', 16],
    ['198.18.0.0', 15],
    ['198.51.100.0', 24],
    ['203.0.113.0', 24],
    ['224.0.0.0', 4],
    ['240.0.0.0', 4],
  ];
  for (const [net, bits] of v4) b.addSubnet(net, bits, 'ipv4');
  const v6: Array<[string, number]> = [
    ['::', 128],
    ['::1', 128],
    ['::', 96],
    ['64:ff9b::', 96],
    ['64:ff9b:1::', 48],
    ['100::', 64],
    ['2001::', 23],
    ['2001:db8::', 32],
    ['2002::', 16],
    ['fc00::', 7],
    ['fe80::', 10],
    ['fec0::', 10],
    ['ff00::', 8],
  ];
  // IPv4-mapped addresses (::ffff:0:0/96) are judged by the IPv4 address they carry (below); a
  // rule for that range here would match every IPv4 address, as BlockList compares them mapped.
  for (const [net, bits] of v6) b.addSubnet(net, bits, 'ipv6');
  return b;
}

const BLOCKED = blockedRanges();

/** A BlockList of the configured addresses and ranges that may be reached though not public. */
export function allowList(entries: string[]): BlockList {
  const b = new BlockList();
  for (const entry of entries) {
    const [ip, bits] = entry.split('/') as [string, string | undefined];
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) b.addAddress(ip, type);
    else b.addSubnet(ip, Number(bits), type);
  }
  return b;
}

/** Whether a preview may connect to this address. */
export function isPublicAddress(address: string, allowed: BlockList = new BlockList()): boolean {
  const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
  if (allowed.check(address, type)) return true;
  if (type === 'ipv6') {
    // An IPv4-mapped address is judged as the IPv4 address it carries.
    const mapped = mappedIpv4(address);
    if (mapped !== undefined) return isPublicAddress(mapped, allowed);
  }
  return !BLOCKED.check(address, type);
}

/** The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:1.2.3.4` or `::ffff:102:304`). */
function mappedIpv4(address: string): string | undefined {
  const dotted = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (dotted) return dotted[1];
  const hex = /^(?:0{0,4}:){0,5}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
  if (!hex) return undefined;
  const hi = Number.parseInt(hex[1]!, 16);
  const lo = Number.parseInt(hex[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

const refused = (msg: string) => new MatrixError(403, 'M_FORBIDDEN', msg);
const failed = (msg: string) => new MatrixError(502, 'M_UNKNOWN', msg);

/** A page's Open Graph data, and the absolute URL of its `og:image` when it names one. */
export interface PagePreview {
  og: Record<string, string>;
  image: string | undefined;
}

export async function previewUrl(raw: string, opts: PreviewOptions): Promise<PagePreview> {
  const res = await fetchVetted(parseTarget(raw), opts, {
    overflow: 'truncate',
    accept: 'text/html,application/xhtml+xml',
  });
  if (res.status < 200 || res.status >= 300) throw failed(`The page answered ${res.status}`);
  const contentType = (res.contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
  if (contentType !== 'text/html' && contentType !== 'application/xhtml+xml') {
    return { og: {}, image: undefined };
  }
  const html = res.body.toString('utf8');
  let image: string | undefined;
  const named = imageOf(html);
  if (named !== undefined) {
    try {
      const url = new URL(named, res.url);
      if (url.protocol === 'http:' || url.protocol === 'https:') image = url.toString();
    } catch {
      // Not a URL: no image.
    }
  }
  return { og: openGraph(html), image };
}

/**
 * The image a preview names, fetched under the same rules as the page (public addresses only,
 * redirects checked, the time limit), refused past `maxBytes`.
 */
export async function fetchPreviewImage(
  raw: string,
  opts: PreviewOptions,
): Promise<{ bytes: Buffer; contentType: string | undefined }> {
  const res = await fetchVetted(parseTarget(raw), opts, { overflow: 'refuse', accept: 'image/*' });
  if (res.status < 200 || res.status >= 300) throw failed(`The image answered ${res.status}`);
  return { bytes: res.body, contentType: res.contentType };
}

/** GETs a URL, following at most MAX_REDIRECTS redirects, each host vetted before connecting. */
async function fetchVetted(
  start: URL,
  opts: PreviewOptions,
  how: { overflow: 'truncate' | 'refuse'; accept: string },
): Promise<Fetched & { url: URL }> {
  const allowed = allowList(opts.allow);
  const signal = AbortSignal.timeout(opts.timeoutMs);
  let url = start;
  for (let hop = 0; ; hop++) {
    const address = await vetHost(url.hostname, allowed);
    const res = await fetchPinned(url, address, {
      maxBytes: opts.maxBytes,
      overflow: how.overflow,
      signal,
      accept: how.accept,
      userAgent: 'Conclave URL preview',
      failure: (timedOut) => toPreviewError(timedOut),
      tooLarge: () => failed('The image is too large'),
    });
    if (res.redirect === undefined) return { ...res, url };
    if (hop >= MAX_REDIRECTS) throw failed('Too many redirects');
    url = parseTarget(new URL(res.redirect, url).toString());
  }
}

function parseTarget(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new MatrixError(400, 'M_INVALID_PARAM', 'url is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new MatrixError(400, 'M_INVALID_PARAM', 'Only http and https URLs are previewed');
  }
  return url;
}

/** Resolves the host; refuses when any address is not public. Returns the address to connect to. */
export async function vetHost(
  hostname: string,
  allowed: BlockList,
): Promise<{ address: string; family: number }> {
  const bare = hostname.replace(/^\[(.*)\]$/, '$1');
  let addresses: Array<{ address: string; family: number }>;
  if (isIP(bare)) addresses = [{ address: bare, family: isIP(bare) }];
  else {
    try {
      addresses = await lookup(bare, { all: true, verbatim: true });
    } catch {
      throw failed('The host name does not resolve');
    }
  }
  if (addresses.length === 0) throw failed('The host name does not resolve');
  for (const a of addresses) {
    if (!isPublicAddress(a.address, allowed)) throw refused('The URL leads to an address that is not public');
  }
  return addresses[0]!;
}

export interface Fetched {
  status: number;
  contentType: string | undefined;
  disposition: string | undefined;
  redirect: string | undefined;
  body: Buffer;
}

export interface FetchOptions {
  maxBytes: number;
  /** `truncate`: keep the first maxBytes (a page's head is enough); `refuse`: fail with `tooLarge()`. */
  overflow: 'truncate' | 'refuse';
  signal: AbortSignal;
  accept: string;
  userAgent: string;
  /** The error for a failed connection or answer (a timeout is told apart by the signal). */
  failure: (timedOut: boolean) => Error;
  tooLarge?: () => Error;
}

/**
 * One GET of `url` connected to an address that was checked (vetHost), whatever the name
 * resolves to now; a redirect is handed back, not followed.
 */
export function fetchPinned(
  url: URL,
  target: { address: string; family: number },
  opts: FetchOptions,
): Promise<Fetched> {
  const { maxBytes, signal } = opts;
  const tooLarge = opts.tooLarge ?? (() => opts.failure(false));
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(opts.failure(true));
    const fail = () => reject(opts.failure(signal.aborted));
    const lib = url.protocol === 'https:' ? https : http;
    const req = lib.request(
      url,
      {
        method: 'GET',
        headers: { 'user-agent': opts.userAgent, accept: opts.accept },
        lookup: ((_host: string, options: { all?: boolean }, cb: (...args: unknown[]) => void) => {
          if (options.all) cb(null, [target]);
          else cb(null, target.address, target.family);
        }) as never,
        signal,
      },
      (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400 && res.headers.location) {
          res.destroy();
          resolve({
            status,
            contentType: undefined,
            disposition: undefined,
            redirect: res.headers.location,
            body: Buffer.alloc(0),
          });
          return;
        }
        const declared = Number(res.headers['content-length']);
        if (opts.overflow === 'refuse' && Number.isFinite(declared) && declared > maxBytes) {
          res.destroy();
          return reject(tooLarge());
        }
        const chunks: Buffer[] = [];
        let size = 0;
        const finish = () =>
          resolve({
            status,
            contentType: res.headers['content-type'],
            disposition: res.headers['content-disposition'],
            redirect: undefined,
            body: Buffer.concat(chunks),
          });
        res.on('data', (chunk: Buffer) => {
          const room = maxBytes - size;
          if (chunk.length > room || (opts.overflow === 'truncate' && chunk.length === room)) {
            res.destroy();
            if (opts.overflow === 'refuse') return reject(tooLarge());
            chunks.push(chunk.subarray(0, room));
            size = maxBytes;
            finish();
            return;
          }
          chunks.push(chunk);
          size += chunk.length;
        });
        res.on('end', finish);
        res.on('error', fail);
      },
    );
    req.on('error', fail);
    req.end();
  });
}

function toPreviewError(timedOut: boolean): MatrixError {
  if (timedOut) return new MatrixError(504, 'M_UNKNOWN', 'The page took too long');
  return failed('The page could not be fetched');
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]{1,6}|#\d{1,7}|[a-z]{2,8});/gi, (whole, name: string) => {
    if (name[0] === '#') {
      const code =
        name[1] === 'x' || name[1] === 'X' ? Number.parseInt(name.slice(2), 16) : Number(name.slice(1));
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

function attributes(tag: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of tag.matchAll(/([a-zA-Z:_-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))/g)) {
    out.set(m[1]!.toLowerCase(), decodeEntities(m[2] ?? m[3] ?? m[4] ?? ''));
  }
  return out;
}

/**
 * The `og:` properties of a page's `<meta>` tags, with the `<title>` and the description meta tag
 * standing in for a missing `og:title` and `og:description`. Image properties are left out
 * here: a client reads `og:image` as an mxc URI, so the media service fetches the image
 * (imageOf), keeps it as a media and describes that instead.
 */
/** The first `og:image` (or `og:image:url`) of a page, as written. */
export function imageOf(html: string): string | undefined {
  for (const m of html.matchAll(/<meta\b[^>]*>/gi)) {
    const attrs = attributes(m[0]);
    const key = (attrs.get('property') ?? attrs.get('name'))?.toLowerCase();
    const content = attrs.get('content')?.trim();
    if ((key === 'og:image' || key === 'og:image:url') && content) return content;
  }
  return undefined;
}

export function openGraph(html: string): Record<string, string> {
  const og: Record<string, string> = {};
  let description: string | undefined;
  let count = 0;
  for (const m of html.matchAll(/<meta\b[^>]*>/gi)) {
    const attrs = attributes(m[0]);
    const key = attrs.get('property') ?? attrs.get('name');
    const content = attrs.get('content');
    if (key === undefined || content === undefined) continue;
    if (key.toLowerCase() === 'description') description ??= content.slice(0, MAX_VALUE);
    if (!key.startsWith('og:') || key.startsWith('og:image') || key in og) continue;
    og[key] = content.slice(0, MAX_VALUE);
    if (++count >= MAX_TAGS) break;
  }
  if (og['og:title'] === undefined) {
    const title = /<title\b[^>]*>([^<]*)<\/title>/i.exec(html)?.[1];
    if (title !== undefined && title.trim() !== '')
      og['og:title'] = decodeEntities(title.trim()).slice(0, MAX_VALUE);
  }
  if (og['og:description'] === undefined && description !== undefined) og['og:description'] = description;
  return og;
}
