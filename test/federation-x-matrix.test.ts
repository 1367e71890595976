// X-Matrix request authentication (server-server API: Request Authentication), pure parts.
import t from 'tap';
import { generateSigningKey, signJson, verifyJsonSignature } from '../src/protocol/signing.ts';
import {
  formatXMatrixHeader,
  parseXMatrixHeader,
  requestSigningObject,
  type XMatrixAuthorization,
} from '../src/protocol/x-matrix.ts';

function parsed(header: string): XMatrixAuthorization {
  const r = parseXMatrixHeader(header);
  if (!r.ok) throw new Error(`expected ${header} to parse: ${r.reason}`);
  return r.auth;
}

t.test('the example header of the spec', async (t) => {
  t.same(
    parsed(
      'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF..."',
    ),
    {
      origin: 'origin.hs.example.com',
      destination: 'destination.hs.example.com',
      key: 'ed25519:key1',
      sig: 'ABCDEF...',
    },
  );
});

t.test('the forms RFC 9110 allows', async (t) => {
  const expected = { origin: 'a.example', destination: 'b.example:8448', key: 'ed25519:k_1', sig: 'c2lnbg' };
  const forms = [
    // Unquoted tokens; colons unquoted as older servers send them.
    'X-Matrix origin=a.example,destination=b.example:8448,key=ed25519:k_1,sig=c2lnbg',
    // Any order, upper-case names and scheme, several spaces after the scheme.
    'x-matrix   SIG="c2lnbg",Key="ed25519:k_1",DESTINATION="b.example:8448",Origin=a.example',
    // Spaces and tabs around the commas.
    'X-Matrix origin="a.example" ,\tdestination="b.example:8448"\t, key=ed25519:k_1 ,sig=c2lnbg',
    // Backslash escapes in quoted values are undone.
    'X-Matrix origin="a\\.example",destination="b.example:8448",key="ed25519:k\\_1",sig="c2lnbg"',
    // Unknown parameters are ignored.
    'X-Matrix origin=a.example,destination=b.example:8448,key=ed25519:k_1,sig=c2lnbg,extra="x, y"',
  ];
  for (const form of forms) t.same(parsed(form), expected, form);
});

t.test('destination may be absent (servers before Matrix 1.3)', async (t) => {
  const auth = parsed('X-Matrix origin=a.example,key="ed25519:k",sig="s"');
  t.equal(auth.destination, undefined);
  t.equal(auth.origin, 'a.example');
});

t.test('malformed headers are refused with a reason', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['Bearer abc', /X-Matrix scheme/],
    ['X-Matrix', /X-Matrix scheme/],
    ['X-Matrixorigin=a', /X-Matrix scheme/],
    ['X-Matrix origin="a",key="ed25519:k"', /sig parameter is missing/],
    ['X-Matrix key="ed25519:k",sig="s"', /origin parameter is missing/],
    ['X-Matrix origin="a",sig="s"', /key parameter is missing/],
    ['X-Matrix origin="",key="ed25519:k",sig="s"', /origin parameter is missing/],
    ['X-Matrix origin="a",origin="b",key="ed25519:k",sig="s"', /appears twice/],
    ['X-Matrix origin="a,key="ed25519:k",sig="s"', /separated by commas/],
    ['X-Matrix origin="a,key=ed25519:k', /unterminated/],
    ['X-Matrix origin="a\\', /unterminated/],
    ['X-Matrix origin=,key="ed25519:k",sig="s"', /empty or invalid value/],
    ['X-Matrix origin="a",key="ed25519:k",sig="s",', /parameter name/],
    ['X-Matrix origin="a" key="ed25519:k",sig="s"', /separated by commas/],
    ['X-Matrix origin', /has no value/],
    ['X-Matrix origin="a\u0001b",key="ed25519:k",sig="s"', /unterminated/],
  ];
  for (const [header, reason] of cases) {
    const r = parseXMatrixHeader(header);
    t.equal(r.ok, false, header);
    if (!r.ok) t.match(r.reason, reason, header);
  }
});

t.test('format and parse round-trip, in the form the spec asks senders to use', async (t) => {
  const auth = { origin: 'a.example', destination: '127.0.0.2:8448', key: 'ed25519:a_1', sig: 'AbC+/9' };
  const header = formatXMatrixHeader(auth);
  t.equal(header, 'X-Matrix origin="a.example",destination="127.0.0.2:8448",key="ed25519:a_1",sig="AbC+/9"');
  t.same(parsed(header), auth);
  // Quotes and backslashes survive escaping.
  const odd = { ...auth, origin: 'we"ird\\' };
  t.same(parsed(formatXMatrixHeader(odd)), odd);
});

t.test('the signed request object', async (t) => {
  t.same(
    requestSigningObject({
      method: 'post',
      uri: '/_matrix/federation/v1/send/1?x=y',
      origin: 'a.example',
      destination: 'b.example',
      content: { pdus: [] },
    }),
    {
      method: 'POST',
      uri: '/_matrix/federation/v1/send/1?x=y',
      origin: 'a.example',
      destination: 'b.example',
      content: { pdus: [] },
    },
  );
  const noBody = requestSigningObject({ method: 'GET', uri: '/x', origin: 'a', destination: 'b' });
  t.notOk('content' in noBody, 'no content member for a request without a body');

  // A signature over the object checks out, and fails once any part of the request changes.
  const key = generateSigningKey('ed25519:k1');
  const parts = { method: 'PUT', uri: '/_matrix/x', origin: 'a.example', destination: 'b.example' };
  const signed = signJson(
    requestSigningObject({ ...parts, content: { n: 1 } }),
    'a.example',
    key.keyId,
    key.seed,
  );
  const sig = signed.signatures['a.example']![key.keyId]!;
  const check = (p: Parameters<typeof requestSigningObject>[0]) =>
    verifyJsonSignature(
      { ...requestSigningObject(p), signatures: { 'a.example': { [key.keyId]: sig } } },
      'a.example',
      key.keyId,
      key.publicKey,
    );
  t.ok(check({ ...parts, content: { n: 1 } }), 'the exact request verifies');
  t.notOk(check({ ...parts, content: { n: 2 } }), 'other content does not');
  t.notOk(check({ ...parts, uri: '/_matrix/y', content: { n: 1 } }), 'another URI does not');
  t.notOk(check({ ...parts, destination: 'c.example', content: { n: 1 } }), 'another destination does not');
  t.notOk(check({ ...parts, method: 'POST', content: { n: 1 } }), 'another method does not');
  t.notOk(check(parts), 'dropping the body does not');
});
