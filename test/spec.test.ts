import dc from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import type { FastifyInstance, HTTPMethods } from 'fastify';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { databaseBackends } from './helpers/backends.ts';
import { SERVER_NAME, startTestServer } from './helpers/server.ts';

/**
 * Keeps spec/openapi.yaml true to the code: the (method, path) pairs it documents are exactly the
 * routes fastify serves, request bodies and parameters match the route schemas, operations that
 * need an access token (found by asking the running app) say so, and the answer to a bare request
 * is a documented one.
 */

type JsonObject = Record<string, unknown>;

const SPEC_FILE = new URL('../spec/openapi.yaml', import.meta.url);
const OPERATION_METHODS = ['get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace'];
/** Schema keywords that constrain values; they must agree between code and spec. */
const CONSTRAINTS = [
  'maxLength',
  'minLength',
  'pattern',
  'maxItems',
  'minItems',
  'maximum',
  'minimum',
  'exclusiveMaximum',
  'exclusiveMinimum',
  'maxProperties',
  'minProperties',
  'const',
];
/** Path parameter values for the bare requests; other parameters get "probe". */
const DUMMY_PARAMS: Record<string, string> = {
  userId: `@probe:${SERVER_NAME}`,
  roomId: `!probe:${SERVER_NAME}`,
  roomIdOrAlias: `!probe:${SERVER_NAME}`,
  roomAlias: `#probe:${SERVER_NAME}`,
  eventId: '$probe',
  deviceId: 'PROBEDEVICE',
  serverName: SERVER_NAME,
  type: 'm.probe',
  eventType: 'm.probe',
};

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function obj(v: unknown): JsonObject {
  return isObject(v) ? v : {};
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}
function strings(v: unknown): string[] {
  return arr(v).filter((x): x is string => typeof x === 'string');
}

// ---------------------------------------------------------------------------------------------
// The served routes

interface ServedRoute {
  method: string;
  /** fastify's form, with :params. */
  url: string;
  /** OpenAPI's form, with {params}. */
  path: string;
  /** The route's JSON schemas (body, querystring, params), without TypeBox's symbols. */
  schema: JsonObject;
}

function toOpenApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)(\([^)]*\))?/g, '{$1}');
}

/** Runs fn, recording every route of every fastify instance created meanwhile. */
async function collectRoutes<T>(fn: () => Promise<T>): Promise<{ result: T; routes: ServedRoute[] }> {
  const routes: ServedRoute[] = [];
  // fastify publishes each new instance on this channel before any plugin or route is added.
  const onInit = (message: unknown) => {
    const { fastify } = message as { fastify: FastifyInstance };
    fastify.addHook('onRoute', (route) => {
      for (const method of [route.method].flat()) {
        if (method === 'HEAD' || method === 'OPTIONS') continue;
        routes.push({
          method,
          url: route.url,
          path: toOpenApiPath(route.url),
          schema: JSON.parse(JSON.stringify(route.schema ?? {})) as JsonObject,
        });
      }
    });
  };
  dc.subscribe('fastify.initialization', onInit);
  try {
    return { result: await fn(), routes };
  } finally {
    dc.unsubscribe('fastify.initialization', onInit);
  }
}

// ---------------------------------------------------------------------------------------------
// The spec

interface Operation {
  method: string;
  path: string;
  op: JsonObject;
  /** Path-item and operation parameters, dereferenced; the operation's win. */
  parameters: JsonObject[];
}

const doc = obj(parseYaml(readFileSync(SPEC_FILE, 'utf8')));

function resolvePointer(ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`only local $refs are supported: ${ref}`);
  let node: unknown = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (!isObject(node) || !(key in node)) throw new Error(`unresolved $ref ${ref}`);
    node = node[key];
  }
  return node;
}

function deref(v: unknown): JsonObject {
  let node = v;
  for (let i = 0; i < 20 && isObject(node) && typeof node.$ref === 'string'; i++) {
    node = resolvePointer(node.$ref);
  }
  return obj(node);
}

function specOperations(): Operation[] {
  const ops: Operation[] = [];
  for (const [path, rawItem] of Object.entries(obj(doc.paths))) {
    const item = deref(rawItem);
    for (const method of OPERATION_METHODS) {
      if (!isObject(item[method])) continue;
      const op = item[method];
      const byKey = new Map<string, JsonObject>();
      for (const p of [...arr(item.parameters), ...arr(op.parameters)].map(deref)) {
        byKey.set(`${String(p.in)}:${String(p.name)}`, p);
      }
      ops.push({ method: method.toUpperCase(), path, op, parameters: [...byKey.values()] });
    }
  }
  return ops;
}

/** The errcodes a response schema allows, or null when it does not restrict them. */
function errcodesOf(schema: unknown): Set<string> | null {
  const s = deref(schema);
  const sets: Array<Set<string> | null> = [];
  const errcode = obj(obj(s.properties).errcode);
  if (Array.isArray(errcode.enum)) sets.push(new Set(strings(errcode.enum)));
  else if (typeof errcode.const === 'string') sets.push(new Set([errcode.const]));
  for (const part of arr(s.allOf)) sets.push(errcodesOf(part));
  const alternatives = [...arr(s.oneOf), ...arr(s.anyOf)].map(errcodesOf);
  if (alternatives.length > 0) {
    sets.push(alternatives.some((a) => a === null) ? null : new Set(alternatives.flatMap((a) => [...a!])));
  }
  // allOf parts and the schema's own properties all apply: intersect what restricts.
  const restricting = sets.filter((set): set is Set<string> => set !== null);
  if (restricting.length === 0) return null;
  const [first, ...rest] = restricting;
  return new Set([...first!].filter((c) => rest.every((set) => set.has(c))));
}

// ---------------------------------------------------------------------------------------------
// Comparing a route's JSON schema with the spec's

interface Shape {
  types: string[];
  constraints: JsonObject;
  properties?: Record<string, Shape>;
  required: string[];
  items?: Shape;
}

/** Reduces a schema (code's or spec's) to what both must agree on, following $refs and unions. */
function shapeOf(schema: unknown): Shape {
  const s = deref(schema);
  const shape: Shape = { types: [], constraints: {}, required: strings(s.required) };
  if (typeof s.type === 'string') shape.types.push(s.type);
  shape.types.push(...strings(s.type));
  for (const k of CONSTRAINTS) if (s[k] !== undefined) shape.constraints[k] = s[k];
  if (isObject(s.properties)) {
    shape.properties = {};
    for (const [name, sub] of Object.entries(s.properties)) shape.properties[name] = shapeOf(sub);
  }
  if (s.items !== undefined) shape.items = shapeOf(s.items);
  for (const member of [...arr(s.anyOf), ...arr(s.oneOf), ...arr(s.allOf)]) {
    const m = shapeOf(member);
    shape.types.push(...m.types);
    Object.assign(shape.constraints, m.constraints);
    if (m.properties) shape.properties = { ...shape.properties, ...m.properties };
    shape.required.push(...m.required);
    shape.items ??= m.items;
  }
  shape.types = [...new Set(shape.types)].sort();
  shape.required = [...new Set(shape.required)].sort();
  return shape;
}

/** Where the spec's shape disagrees with the code's. Free-form objects in code may be described more. */
function compareShapes(code: Shape, spec: Shape, at: string): string[] {
  const out: string[] = [];
  if (code.types.join() !== spec.types.join()) {
    out.push(`${at}: type is [${code.types}] in code, [${spec.types}] in spec`);
  }
  for (const k of CONSTRAINTS) {
    if (JSON.stringify(code.constraints[k]) !== JSON.stringify(spec.constraints[k])) {
      out.push(
        `${at}: ${k} is ${JSON.stringify(code.constraints[k])} in code, ${JSON.stringify(spec.constraints[k])} in spec`,
      );
    }
  }
  if (code.required.join() !== spec.required.join()) {
    out.push(`${at}: required is [${code.required}] in code, [${spec.required}] in spec`);
  }
  if (code.properties) {
    const names = new Set([...Object.keys(code.properties), ...Object.keys(spec.properties ?? {})]);
    for (const name of [...names].sort()) {
      const c = code.properties[name];
      const s = spec.properties?.[name];
      if (!c) out.push(`${at}.${name}: in spec but not in code`);
      else if (!s) out.push(`${at}.${name}: in code but not in spec`);
      else out.push(...compareShapes(c, s, `${at}.${name}`));
    }
  }
  if (code.items || spec.items) {
    out.push(...compareShapes(code.items ?? shapeOf({}), spec.items ?? shapeOf({}), `${at}[]`));
  }
  return out;
}

function specBodySchema(op: JsonObject): { schema: unknown; required: boolean } | undefined {
  if (op.requestBody === undefined) return undefined;
  const body = deref(op.requestBody);
  return { schema: obj(obj(body.content)['application/json']).schema, required: body.required === true };
}

// ---------------------------------------------------------------------------------------------

t.test('spec/openapi.yaml describes the served API', async (t) => {
  const backend = databaseBackends()[0]!;
  const { result: s, routes } = await collectRoutes(() =>
    startTestServer(t, backend, { maxRequestBytes: 4096 }),
  );
  const ops = specOperations();
  const key = (x: { method: string; path: string }) => `${x.method} ${x.path}`;
  const served = new Map(routes.map((r) => [key(r), r]));
  const documented = new Map(ops.map((o) => [key(o), o]));

  t.ok(served.size > 0, 'routes were collected');
  t.match(String(doc.openapi), /^3\.1\./, 'an OpenAPI 3.1 document');

  t.test('every $ref resolves', async (t) => {
    const refs: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (isObject(v)) {
        if (typeof v.$ref === 'string') refs.push(v.$ref);
        Object.values(v).forEach(walk);
      }
    };
    walk(doc);
    const broken = refs.filter((ref) => {
      try {
        resolvePointer(ref);
        return false;
      } catch {
        return true;
      }
    });
    t.same(broken, [], 'no dangling $ref');
  });

  t.test('the documented routes are exactly the served ones', async (t) => {
    const undocumented = [...served.keys()].filter((k) => !documented.has(k)).sort();
    const notServed = [...documented.keys()].filter((k) => !served.has(k)).sort();
    t.same(undocumented, [], 'every served route is in the spec');
    t.same(notServed, [], 'every route in the spec is served');
  });

  // The answer of each route to a request without token, parameters or body.
  const bare = new Map<string, { status: number; body: unknown; cors: unknown }>();
  for (const route of routes) {
    const url = route.url.replace(/:([A-Za-z0-9_]+)(\([^)]*\))?/g, (_, name: string) =>
      encodeURIComponent(DUMMY_PARAMS[name] ?? 'probe'),
    );
    const res = await s.app.inject({ method: route.method as HTTPMethods, url });
    let body: unknown;
    try {
      body = res.json();
    } catch {
      body = undefined;
    }
    bare.set(key(route), { status: res.statusCode, body, cors: res.headers['access-control-allow-origin'] });
  }
  const needsToken = (k: string) => {
    const b = bare.get(k);
    return b?.status === 401 && obj(b.body).errcode === 'M_MISSING_TOKEN';
  };
  // Federation routes refuse a bare request for want of an X-Matrix signature.
  const needsSignature = (k: string) => {
    const b = bare.get(k);
    return b?.status === 401 && obj(b.body).errcode === 'M_UNAUTHORIZED';
  };

  for (const operation of ops) {
    const k = key(operation);
    const route = served.get(k);
    const { op } = operation;
    t.test(k, async (t) => {
      t.type(op.summary, 'string', 'has a summary');
      t.ok(String(op.summary ?? '').trim().length > 0, 'the summary is not empty');
      const responses = obj(op.responses);
      const statuses = Object.keys(responses);
      // A WebSocket route succeeds with 101 Switching Protocols, not a 2xx.
      const success = op['x-conclave-websocket'] === true ? /^(2|101$)/ : /^2/;
      t.ok(
        statuses.some((c) => success.test(c)),
        'documents a success response',
      );
      const clientErrors = statuses.filter((c) => /^4(\d\d|XX)$/.test(c));
      const exemption = op['x-conclave-no-client-error'];
      if (typeof exemption === 'string') {
        // Only for endpoints that take nothing a client could get wrong; the bare request below
        // must then succeed.
        t.same(clientErrors, [], 'an operation said to have no client error documents none');
        t.notOk(
          route?.schema.body ?? route?.schema.querystring ?? route?.schema.params,
          'and takes no input',
        );
      } else {
        t.ok(clientErrors.length > 0, 'documents at least one 4xx response');
      }

      // Path parameters: exactly those of the template, all required.
      const templateParams = [...operation.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!).sort();
      const pathParams = operation.parameters.filter((p) => p.in === 'path');
      t.same(pathParams.map((p) => String(p.name)).sort(), templateParams, 'declares its path parameters');
      for (const p of pathParams) t.equal(p.required, true, `path parameter ${String(p.name)} is required`);

      if (!route) return; // reported above

      const mismatches: string[] = [];
      // Path parameter schemas, where the route has one.
      const codeParams = shapeOf(route.schema.params);
      for (const p of pathParams) {
        const c = codeParams.properties?.[String(p.name)];
        if (c) mismatches.push(...compareShapes(c, shapeOf(p.schema), `path ${String(p.name)}`));
      }

      // Query parameters (access_token belongs to the security schemes, not to operations).
      const codeQuery = shapeOf(route.schema.querystring);
      const queryParams = operation.parameters.filter((p) => p.in === 'query' && p.name !== 'access_token');
      const codeNames = Object.keys(codeQuery.properties ?? {})
        .filter((n) => n !== 'access_token')
        .sort();
      t.same(queryParams.map((p) => String(p.name)).sort(), codeNames, 'documents the query parameters');
      for (const p of queryParams) {
        const name = String(p.name);
        const c = codeQuery.properties?.[name];
        if (!c) continue;
        t.equal(p.required === true, codeQuery.required.includes(name), `query ${name}: required as in code`);
        mismatches.push(...compareShapes(c, shapeOf(p.schema), `query ${name}`));
      }

      // The request body.
      const specBody = specBodySchema(op);
      if (route.schema.body !== undefined) {
        t.ok(specBody, 'documents the request body');
        if (specBody) {
          t.equal(specBody.required, true, 'the body is required, as the route schema makes it');
          mismatches.push(...compareShapes(shapeOf(route.schema.body), shapeOf(specBody.schema), 'body'));
        }
      } else if (specBody) {
        t.not(specBody.required, true, 'a route without a body schema does not require a body');
      }
      t.same(mismatches, [], 'parameter and body schemas match the route schemas');

      // Token: the app is the judge. A bare request to a route with requireAuth gets M_MISSING_TOKEN.
      const security = arr(op.security ?? doc.security ?? []).map(obj);
      const specNeedsToken =
        security.length > 0 && security.every((requirement) => Object.keys(requirement).length > 0);
      if (needsSignature(k)) {
        t.ok(
          security.length > 0 && security.every((requirement) => 'xMatrix' in requirement),
          'needs an X-Matrix signature and says so',
        );
      } else if (needsToken(k)) {
        t.ok(specNeedsToken, 'needs a token and says so');
        t.ok(
          security.some((requirement) => 'accessToken' in requirement),
          'offers the accessToken scheme',
        );
      } else {
        t.notOk(specNeedsToken, 'needs no token and does not claim to');
      }

      // The answer to the bare request is one the spec documents.
      const answer = bare.get(k)!;
      t.equal(answer.cors, '*', 'the answer carries CORS headers');
      const documentedResponse =
        responses[String(answer.status)] ?? responses[`${String(answer.status)[0]}XX`];
      t.ok(documentedResponse, `the bare request's status ${answer.status} is documented`);
      const errcode = obj(answer.body).errcode;
      if (documentedResponse && typeof errcode === 'string') {
        const schema = obj(obj(deref(documentedResponse).content)['application/json']).schema;
        const allowed = errcodesOf(schema);
        t.ok(
          allowed === null || allowed.has(errcode),
          `errcode ${errcode} is documented for ${answer.status}`,
          { allowed: allowed && [...allowed] },
        );
      }
      if (typeof exemption === 'string') t.equal(answer.status, 200, 'the bare request succeeds');
    });
  }

  t.test('the conventions of info.description hold', async (t) => {
    const description = String(obj(doc.info).description);
    for (const phrase of ['max_request_bytes', 'M_TOO_LARGE', 'M_NOT_JSON', 'M_BAD_JSON', '2^53-1', '64']) {
      t.ok(description.includes(phrase), `the description mentions ${phrase}`);
    }
    const login = '/_matrix/client/v3/login';
    const cases: Array<[string, Awaited<ReturnType<typeof s.request>>, number, string]> = [
      ['unknown path', await s.request('GET', '/_matrix/client/v3/no_such_endpoint'), 404, 'M_UNRECOGNIZED'],
      ['served path, wrong method', await s.request('DELETE', login), 405, 'M_UNRECOGNIZED'],
      [
        'body too large',
        await s.request('POST', login, { body: { type: 'x'.repeat(5000) } }),
        413,
        'M_TOO_LARGE',
      ],
      ['invalid JSON', await s.request('POST', login, { rawBody: '{"type":' }), 400, 'M_NOT_JSON'],
      [
        'invalid UTF-8',
        await s.request('POST', login, { rawBody: Buffer.from([0x7b, 0xff, 0x7d]) }),
        400,
        'M_NOT_JSON',
      ],
      [
        'integer beyond 2^53-1',
        await s.request('POST', login, { rawBody: '{"type":"m.login.password","n":9007199254740992}' }),
        400,
        'M_BAD_JSON',
      ],
      [
        'nesting deeper than 64',
        await s.request('POST', login, {
          rawBody: `{"type":"m.login.password","n":${'['.repeat(64)}${']'.repeat(64)}}`,
        }),
        400,
        'M_BAD_JSON',
      ],
    ];
    for (const [what, res, status, errcode] of cases) {
      t.equal(res.statusCode, status, `${what}: ${status}`);
      t.equal(res.json().errcode, errcode, `${what}: ${errcode}`);
      t.equal(res.headers['access-control-allow-origin'], '*', `${what}: CORS headers`);
    }
    const preflight = await s.request('OPTIONS', '/_matrix/client/v3/account/whoami');
    t.equal(preflight.statusCode, 204, 'OPTIONS needs no token');
    t.equal(preflight.headers['access-control-allow-origin'], '*');
  });
});
