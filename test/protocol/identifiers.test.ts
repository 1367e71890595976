import t from 'tap';
import {
  isCompliantLocalpart,
  isHistoricalLocalpart,
  isIpv6,
  isValidEventId,
  isValidLocalpart,
  isValidRoomAlias,
  isValidRoomId,
  isValidServerName,
  isValidUserId,
  parseDomainRoomId,
  parseRoomAlias,
  parseServerName,
  parseUserId,
} from '../../src/protocol/identifiers.ts';
import { ROOM_VERSIONS } from '../../src/protocol/room-versions.ts';

const v10 = ROOM_VERSIONS['10'];
const v11 = ROOM_VERSIONS['11'];
const v12 = ROOM_VERSIONS['12'];

t.test('server names: the examples of appendices: Server Name', async (t) => {
  t.same(parseServerName('matrix.org'), { host: 'matrix.org', kind: 'dns' });
  t.same(parseServerName('matrix.org:8888'), { host: 'matrix.org', kind: 'dns', port: 8888 });
  t.same(parseServerName('1.2.3.4'), { host: '1.2.3.4', kind: 'ipv4' });
  t.same(parseServerName('1.2.3.4:1234'), { host: '1.2.3.4', kind: 'ipv4', port: 1234 });
  t.same(parseServerName('[1234:5678::abcd]'), { host: '[1234:5678::abcd]', kind: 'ipv6' });
  t.same(parseServerName('[1234:5678::abcd]:5678'), { host: '[1234:5678::abcd]', kind: 'ipv6', port: 5678 });
});

t.test('server names: more valid ones', async (t) => {
  const valid = [
    'localhost',
    'MATRIX.ORG', // allowed, though not recommended; compared case-sensitively
    'my-server.example',
    '0.0.0.0',
    '255.255.255.255:65535',
    'example.org:1',
    'example.org:99999', // the grammar allows 1-5 digits and nothing more
    '[::1]',
    '[::]',
    '[1:2:3:4:5:6:7:8]',
    '[::ffff:192.0.2.1]:8448',
    '[1:2:3:4:5:6:1.2.3.4]',
    '[FEDC:BA98::3210]',
    'a'.repeat(255),
  ];
  for (const name of valid) t.ok(isValidServerName(name), name);
});

t.test('server names: invalid ones', async (t) => {
  const invalid = [
    '',
    ':8448',
    'example.org:',
    'example.org:123456', // six digits
    'example.org:80a',
    'example.org:-1',
    'exa mple.org',
    'exa_mple.org', // underscore is not a dns-char
    'example.org/path',
    'ex\u00e4mple.org', // IDNs must be in their punycode form
    'a..b',
    '.example.org',
    'example.org.', // empty final label
    '256.1.1.1', // an IPv4 literal out of range
    '1.2.3.4.5:x',
    '[1234:5678::abcd', // unclosed bracket
    '1234:5678::abcd', // IPv6 without brackets
    '[1234:5678::abcd]x',
    '[1:2:3:4:5:6:7:8:9]',
    '[1::2::3]',
    '[12345::]',
    '[::1%eth0]', // zone IDs are not in the grammar
    '[g::1]',
    '[]',
    'a'.repeat(256),
  ];
  for (const name of invalid) t.notOk(isValidServerName(name), JSON.stringify(name));
});

t.test('IPv6 literal forms (RFC 3513 section 2.2)', async (t) => {
  for (const good of ['::', '::1', '1::', '1:0:0:0:0:0:0:8', '1::8', '::13.1.68.3', '::FFFF:129.144.52.38']) {
    t.ok(isIpv6(good), good);
  }
  for (const bad of [
    '1',
    ':1',
    '1:',
    '1:2:3:4:5:6:7',
    '1:2:3:4::5:6:7:8',
    ':::',
    '1:2:3:4:5:6:7:1.2.3.4',
    '::1.2.3',
    '::256.1.1.1',
  ]) {
    t.notOk(isIpv6(bad), bad);
  }
});

t.test('user IDs: the current grammar, for IDs we create', async (t) => {
  for (const localpart of ['alice', 'a', 'bob.smith', 'x_y', 'a=b', 'a-b', 'a/b', 'a+b', '0123456789']) {
    t.ok(isValidLocalpart(localpart), localpart);
    t.ok(isValidUserId(`@${localpart}:example.org`, { strict: true }), `@${localpart}:example.org`);
  }
  for (const localpart of ['', 'Alice', 'a b', 'a:b', 'a#b', 'a*b', 'ä', 'a@b', 'a!b']) {
    t.notOk(isValidLocalpart(localpart), JSON.stringify(localpart));
  }
});

t.test('user IDs: historical ones from other servers are still accepted', async (t) => {
  // appendices: Historical User IDs: any scalar values but `:` and NUL, the empty string included.
  for (const userId of [
    '@Alice:example.org',
    '@:example.org',
    '@ä b\u0001:example.org',
    '@\u{1F600}:example.org',
  ]) {
    t.ok(isValidUserId(userId), JSON.stringify(userId));
    t.notOk(isValidUserId(userId, { strict: true }), `strict refuses ${JSON.stringify(userId)}`);
  }
  t.ok(isHistoricalLocalpart(''));
  t.notOk(isHistoricalLocalpart('a\u0000b'), 'NUL');
  t.notOk(isHistoricalLocalpart('a\uD800'), 'lone surrogate');
});

t.test('user IDs: the spec\'s "compliant" set is printable ASCII', async (t) => {
  t.ok(isCompliantLocalpart('Alice!'), 'upper case and punctuation are compliant, though not strict');
  t.notOk(isCompliantLocalpart(''), 'empty');
  t.notOk(isCompliantLocalpart('a b'), 'space');
  t.notOk(isCompliantLocalpart('ä'), 'non-ASCII');
});

t.test('user IDs: parsing', async (t) => {
  t.same(parseUserId('@alice:example.org'), { localpart: 'alice', serverName: 'example.org' });
  t.same(parseUserId('@alice:example.org:8448'), { localpart: 'alice', serverName: 'example.org:8448' });
  t.same(parseUserId('@alice:[::1]:8448'), { localpart: 'alice', serverName: '[::1]:8448' });
  for (const bad of [
    'alice:example.org',
    '#alice:example.org',
    '@alice',
    '@alice:',
    '@alice:bad_server',
    '@a\u0000:example.org',
  ]) {
    t.equal(parseUserId(bad), null, JSON.stringify(bad));
  }
});

t.test('user IDs: at most 255 bytes of UTF-8', async (t) => {
  const domain = ':example.org';
  const fits = `@${'a'.repeat(255 - 1 - domain.length)}${domain}`;
  t.equal(fits.length, 255);
  t.ok(isValidUserId(fits, { strict: true }));
  t.notOk(isValidUserId(`@a${fits.slice(1)}`), '256 bytes');
  // Bytes, not characters: each é is two bytes of UTF-8.
  const accented = `@${'é'.repeat(122)}${domain}`;
  t.equal(accented.length, 135, 'well under 255 characters...');
  t.notOk(isValidUserId(accented), '...but 257 bytes');
});

t.test('room aliases', async (t) => {
  t.same(parseRoomAlias('#room:example.org'), { localpart: 'room', serverName: 'example.org' });
  for (const alias of ['#room:example.org', '#Room Name ü:example.org:8448', '#a:1.2.3.4']) {
    t.ok(isValidRoomAlias(alias), alias);
  }
  const invalid = [
    'room:example.org',
    '!room:example.org',
    '#room',
    '#:example.org',
    '#room:',
    '#a\u0000b:example.org',
  ];
  for (const alias of invalid) t.notOk(isValidRoomAlias(alias), JSON.stringify(alias));
  t.notOk(isValidRoomAlias(`#${'a'.repeat(250)}:example.org`), 'over 255 bytes');
});

// A real reference hash in URL-safe base64, and one with the `/` `+` alphabet.
const HASH = 'RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438';
const STANDARD_HASH = 'RrGxF28UrHLmoASHndYb9Jb/1SFww2ptmtur9INS438';

t.test('room IDs: v12 hash form versus the older !opaque:server form', async (t) => {
  t.ok(isValidRoomId(`!${HASH}`, v12), 'v12 hash form');
  t.notOk(isValidRoomId('!abc:example.org', v12), 'v12 has no server name');
  t.notOk(isValidRoomId(`!${STANDARD_HASH}`, v12), 'v12 uses the URL-safe alphabet');
  t.notOk(isValidRoomId(`!${HASH.slice(1)}`, v12), '42 characters');
  t.notOk(isValidRoomId(`!${HASH}A`, v12), '44 characters');
  t.notOk(isValidRoomId(`!${HASH.slice(0, -1)}9`, v12), 'a last character no 32-byte hash can end with');
  t.notOk(isValidRoomId(`$${HASH}`, v12), 'event ID sigil');

  for (const version of [v10, v11]) {
    t.ok(isValidRoomId('!abcDEF123:example.org', version), `v${version.id}: opaque:server`);
    t.ok(isValidRoomId('!a b:[::1]:8448', version), `v${version.id}: any opaque scalar values`);
    t.notOk(isValidRoomId(`!${HASH}`, version), `v${version.id}: no hash form`);
    t.notOk(isValidRoomId('!:example.org', version), `v${version.id}: empty opaque part`);
    t.notOk(isValidRoomId('!abc:bad_server', version), `v${version.id}: bad server name`);
  }

  t.ok(isValidRoomId(`!${HASH}`), 'without a version, the hash form...');
  t.ok(isValidRoomId('!abc:example.org'), '...and the server form are accepted');
  t.notOk(isValidRoomId('!abc'), 'but not an opaque part alone');
  t.notOk(isValidRoomId(`!${'a'.repeat(250)}:example.org`), 'over 255 bytes');
  t.same(parseDomainRoomId('!abc:example.org'), { localpart: 'abc', serverName: 'example.org' });
});

t.test('event IDs', async (t) => {
  for (const version of [v10, v11, v12]) {
    t.ok(isValidEventId(`$${HASH}`, version), `v${version.id}: reference hash`);
    t.notOk(isValidEventId(`$${STANDARD_HASH}`, version), `v${version.id}: not the v3 alphabet`);
    t.notOk(isValidEventId('$abc:example.org', version), `v${version.id}: not the v1/v2 form`);
    t.notOk(isValidEventId(`!${HASH}`, version), `v${version.id}: wrong sigil`);
  }
  const v1 = ROOM_VERSIONS['1'];
  const v3 = ROOM_VERSIONS['3'];
  const v4 = ROOM_VERSIONS['4'];
  t.ok(isValidEventId('$abc:example.org', v1), 'v1: $opaque:server');
  t.ok(isValidEventId('$abc:example.org', ROOM_VERSIONS['2']), 'v2: $opaque:server');
  t.notOk(isValidEventId(`$${HASH}`, v1), 'v1: a hash has no server');
  t.notOk(isValidEventId('$:example.org', v1), 'v1: the opaque part is not empty');
  t.notOk(isValidEventId('$abc:bad server', v1), 'v1: the server name is valid');
  t.ok(isValidEventId(`$${STANDARD_HASH}`, v3), 'v3: standard base64');
  t.notOk(isValidEventId(`$${HASH}`, v3), 'v3: not the URL-safe alphabet');
  t.ok(isValidEventId(`$${HASH}`, v4), 'v4: URL-safe');
  t.notOk(isValidEventId(`$${STANDARD_HASH}`, v4), 'v4: not the v3 alphabet');
  // Without a version: only what all versions share (sigil, non-empty, 255 bytes).
  t.ok(isValidEventId('$abc:example.org'));
  t.ok(isValidEventId(`$${STANDARD_HASH}`));
  t.notOk(isValidEventId('$'));
  t.notOk(isValidEventId('abc'));
  t.notOk(isValidEventId(`$${'a'.repeat(255)}`), '256 bytes');
});
