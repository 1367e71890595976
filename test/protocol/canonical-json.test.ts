import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { canonicalize } from 'json-canonicalize';
import t from 'tap';
import {
  CanonicalJsonError,
  canonicalJson,
  canonicalJsonBytes,
  compareCodePoints,
} from '../../src/protocol/canonical-json.ts';

/**
 * The examples of appendices: Canonical JSON > Examples, as [input JSON text, expected output].
 * The inputs stay JSON text so that escapes (`\u65E5`), `-0` and `1e10` go through JSON.parse
 * exactly as they would arrive over the wire.
 */
const SPEC_VECTORS: ReadonlyArray<readonly [string, string]> = [
  ['{}', '{}'],
  ['{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'],
  ['{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'],
  ['{"b":"2","a":"1"}', '{"a":"1","b":"2"}'],
  [
    `{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {"medium": "email", "address": "john.doe@example.org"},
                {"medium": "msisdn", "address": "123456789"}
            ]
        }
    }
}`,
    '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
  ],
  ['{\n    "a": "日本語"\n}', '{"a":"日本語"}'],
  ['{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'],
  [String.raw`{"a": "\u65E5"}`, '{"a":"日"}'],
  ['{\n    "a": null\n}', '{"a":null}'],
  ['{\n    "a": -0,\n    "b": 1e10\n}', '{"a":0,"b":10000000000}'],
];

const isCanonicalJsonError = { name: 'CanonicalJsonError' };

t.test('appendices: every canonical JSON example', async (t) => {
  for (const [input, expected] of SPEC_VECTORS) {
    t.equal(canonicalJson(JSON.parse(input)), expected, expected);
  }
});

// When the spec checkout is present, make sure the list above is the spec's complete list.
// The spec checkout sits beside the repository (shared/matrix-spec), in CI as on a developer's machine.
const APPENDICES = fileURLToPath(
  new URL('../../../shared/matrix-spec/content/appendices.md', import.meta.url),
);
t.test(
  'the embedded examples are all the examples in the spec',
  { skip: !existsSync(APPENDICES) },
  async (t) => {
    const section = readFileSync(APPENDICES, 'utf8')
      .split('#### Examples')[1]
      ?.split('### Signing Details')[0];
    const blocks = [...(section ?? '').matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
    t.equal(blocks.length, SPEC_VECTORS.length * 2, 'one input and one output block per example');
    for (let i = 0; i < blocks.length; i += 2) {
      const input = JSON.parse(blocks[i]!);
      const expected = blocks[i + 1]!.trim();
      t.equal(canonicalJson(input), expected, expected);
    }
  },
);

t.test('json-canonicalize (RFC 8785) agrees on the spec examples', async (t) => {
  for (const [input, expected] of SPEC_VECTORS) {
    t.equal(canonicalize(JSON.parse(input)), expected, expected);
  }
});

t.test('where RFC 8785 and Matrix differ, we follow Matrix', async (t) => {
  t.test('keys are sorted by code point, not by UTF-16 code unit', async (t) => {
    // U+1F600 is the surrogate pair D83D DE00 in UTF-16; U+FB01 is the single unit FB01.
    // Code point order: FB01 < 1F600. UTF-16 order: D83D < FB01, so RFC 8785 flips them.
    const value = { '\u{1F600}': 1, '\uFB01': 2 };
    t.equal(canonicalJson(value), '{"\uFB01":2,"\u{1F600}":1}');
    t.equal(canonicalize(value), '{"\u{1F600}":1,"\uFB01":2}');

    // An independent oracle: code point order is the byte order of UTF-8.
    const byUtf8 = Object.keys(value).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    t.same(byUtf8, ['\uFB01', '\u{1F600}']);
  });

  t.test('floats are refused; RFC 8785 writes them', async (t) => {
    t.throws(() => canonicalJson({ a: 1.5 }), isCanonicalJsonError);
    t.equal(canonicalize({ a: 1.5 }), '{"a":1.5}');
  });

  t.test('2**53 is out of range; RFC 8785 writes it', async (t) => {
    t.throws(() => canonicalJson({ a: 2 ** 53 }), isCanonicalJsonError);
    t.equal(canonicalize({ a: 2 ** 53 }), '{"a":9007199254740992}');
  });

  t.test('lone surrogates are refused (no UTF-8 form); RFC 8785 escapes them', async (t) => {
    t.throws(() => canonicalJson({ a: '\uD800' }), isCanonicalJsonError);
    t.equal(canonicalize({ a: '\uD800' }), '{"a":"\\ud800"}');
  });
});

t.test('numbers', async (t) => {
  t.equal(canonicalJson(2 ** 53 - 1), '9007199254740991', 'largest allowed');
  t.equal(canonicalJson(-(2 ** 53 - 1)), '-9007199254740991', 'smallest allowed');
  t.equal(canonicalJson(1e15), '1000000000000000', 'never an exponent');
  t.equal(canonicalJson(-0), '0', '-0 is written as 0');
  t.throws(() => canonicalJson(-(2 ** 53)), isCanonicalJsonError, 'below range');
  t.throws(() => canonicalJson(1e21), isCanonicalJsonError, 'far above range');
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 0.1, -2.5]) {
    t.throws(() => canonicalJson([bad]), isCanonicalJsonError, String(bad));
  }
});

t.test('values outside JSON are refused, with the path of the bad value', async (t) => {
  const cases: Array<[string, unknown]> = [
    ['undefined member', { a: undefined }],
    ['undefined element', [undefined]],
    // biome-ignore lint/suspicious/noSparseArray: the hole is the point of this case
    ['sparse array', [1, , 3]],
    ['function', { f: () => 1 }],
    ['symbol', Symbol('x')],
    ['bigint', 1n],
    ['Date', new Date(0)],
    ['Map', new Map()],
    ['Uint8Array', new Uint8Array(1)],
    ['lone surrogate in a key', { '\uDC00': 1 }],
  ];
  for (const [name, value] of cases) t.throws(() => canonicalJson(value), isCanonicalJsonError, name);

  const circular: Record<string, unknown> = {};
  circular.self = circular;
  t.throws(() => canonicalJson(circular), isCanonicalJsonError, 'circular object');

  try {
    canonicalJson({ a: [{ b: 0.5 }] });
    t.fail('should have thrown');
  } catch (error) {
    t.ok(error instanceof CanonicalJsonError);
    t.equal((error as CanonicalJsonError).path, '$.a[0].b');
  }
});

t.test('shared (non-circular) references are fine', async (t) => {
  const shared = { x: 1 };
  t.equal(canonicalJson({ a: shared, b: [shared, shared] }), '{"a":{"x":1},"b":[{"x":1},{"x":1}]}');
});

t.test('objects without a prototype are plain objects', async (t) => {
  const bare = Object.assign(Object.create(null) as Record<string, unknown>, { b: 1, a: 2 });
  t.equal(canonicalJson(bare), '{"a":2,"b":1}');
});

t.test('string escapes follow the appendix grammar exactly', async (t) => {
  const short: Record<number, string> = { 8: '\\b', 9: '\\t', 10: '\\n', 12: '\\f', 13: '\\r' };
  for (let code = 0; code < 0x20; code++) {
    const expected = short[code] ?? `\\u00${code.toString(16).padStart(2, '0')}`;
    t.equal(canonicalJson(String.fromCharCode(code)), `"${expected}"`, `U+${code.toString(16)}`);
  }
  t.equal(canonicalJson('"\\'), '"\\"\\\\"', 'quote and backslash');
  t.equal(canonicalJson('/'), '"/"', 'solidus is not escaped');
  t.equal(canonicalJson('\u007f'), '"\u007f"', 'DEL is not escaped');
  t.equal(canonicalJson('\u2028\u2029'), '"\u2028\u2029"', 'line/paragraph separators are not escaped');
  t.equal(canonicalJson('é\u{1F600}'), '"é\u{1F600}"', 'non-ASCII is written as itself');
});

t.test('nested objects are sorted at every level, arrays keep their order', async (t) => {
  t.equal(
    canonicalJson({ z: { b: [3, 1, 2], a: true }, a: false }),
    '{"a":false,"z":{"a":true,"b":[3,1,2]}}',
  );
});

t.test('canonicalJsonBytes is the UTF-8 encoding', async (t) => {
  t.same(
    canonicalJsonBytes({ a: '日' }),
    new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xe6, 0x97, 0xa5, 0x22, 0x7d]),
  );
});

t.test('compareCodePoints matches UTF-8 byte order on many strings', async (t) => {
  // Characters chosen around the boundaries where UTF-16 and code point order part ways.
  const alphabet = [
    'a',
    'Z',
    '\u00e9',
    '\ud7ff',
    '\ue000',
    '\uFB01',
    '\uffff',
    '\u{10000}',
    '\u{1F600}',
    '\u{10FFFF}',
  ];
  let seed = 42;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const strings = Array.from({ length: 300 }, () =>
    Array.from(
      { length: 1 + Math.floor(random() * 4) },
      () => alphabet[Math.floor(random() * alphabet.length)],
    ).join(''),
  );
  const expected = [...strings].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  t.same([...strings].sort(compareCodePoints), expected);
  t.not(
    JSON.stringify([...strings].sort()),
    JSON.stringify(expected),
    'the default UTF-16 sort really does differ on this sample',
  );
});
