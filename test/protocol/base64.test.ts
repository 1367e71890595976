import t from 'tap';
import { decodeBase64, decodeBase64Url, encodeBase64, encodeBase64Url } from '../../src/protocol/base64.ts';

const utf8 = (text: string) => new TextEncoder().encode(text);
const isBase64Error = { name: 'Base64Error' };

// appendices: Unpadded Base64 (examples)
const SPEC_EXAMPLES: ReadonlyArray<readonly [string, string]> = [
  ['', ''],
  ['f', 'Zg'],
  ['fo', 'Zm8'],
  ['foo', 'Zm9v'],
  ['foob', 'Zm9vYg'],
  ['fooba', 'Zm9vYmE'],
  ['foobar', 'Zm9vYmFy'],
];

t.test('appendices: unpadded base64 examples, both ways', async (t) => {
  for (const [plain, encoded] of SPEC_EXAMPLES) {
    t.equal(encodeBase64(utf8(plain)), encoded, `encode ${JSON.stringify(plain)}`);
    t.same(decodeBase64(encoded), utf8(plain), `decode ${encoded}`);
  }
});

t.test('decoders accept padded input too', async (t) => {
  t.same(decodeBase64('Zg=='), utf8('f'));
  t.same(decodeBase64('Zm8='), utf8('fo'));
  t.same(decodeBase64Url('Zg=='), utf8('f'));
});

t.test('the two alphabets differ only in characters 62 and 63', async (t) => {
  const bytes = new Uint8Array([0xfb, 0xff, 0xbf]); // 111110 111111 111110 111111
  t.equal(encodeBase64(bytes), '+/+/');
  t.equal(encodeBase64Url(bytes), '-_-_');
  t.same(decodeBase64('+/+/'), bytes);
  t.same(decodeBase64Url('-_-_'), bytes);
  t.equal(encodeBase64Url(new Uint8Array([0xff])), '_w', 'URL-safe output is unpadded as well');
});

t.test('each decoder refuses the other alphabet', async (t) => {
  t.throws(() => decodeBase64('-_-_'), isBase64Error);
  t.throws(() => decodeBase64Url('+/+/'), isBase64Error);
});

t.test('malformed input is an error, not silently skipped', async (t) => {
  const bad = [
    'Zm9v!', // outside the alphabet
    'Zm 9v', // whitespace
    'Z', // 4n+1 characters
    'Zm9vY', // 4n+1 characters
    'Zg=', // too little padding
    'Zg===', // too much padding
    'Zm8==', // padding beyond the group
    'Zg==Zg==', // padding in the middle
    '=', // padding alone
  ];
  for (const text of bad) {
    t.throws(() => decodeBase64(text), isBase64Error, JSON.stringify(text));
    t.throws(() => decodeBase64Url(text), isBase64Error, `url: ${JSON.stringify(text)}`);
  }
});

t.test('encoding respects the view of a larger buffer', async (t) => {
  const backing = utf8('xxfooxx');
  t.equal(encodeBase64(backing.subarray(2, 5)), 'Zm9v');
});

t.test('round trip of every length up to 64 bytes', async (t) => {
  for (let length = 0; length <= 64; length++) {
    const bytes = Uint8Array.from({ length }, (_, i) => (i * 37 + length) & 0xff);
    t.same(decodeBase64(encodeBase64(bytes)), bytes, `standard, ${length}`);
    t.same(decodeBase64Url(encodeBase64Url(bytes)), bytes, `url-safe, ${length}`);
  }
});
