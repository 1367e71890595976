import type { Session } from './session.ts';

/**
 * Sign-in and registration over the client-server API. Plain fetch: these run before there is a
 * client, and registration's user-interactive auth is a small state machine of its own.
 */

export class AuthError extends Error {
  constructor(
    readonly errcode: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

type Fetch = typeof fetch;

async function post(
  fetchFn: Fetch,
  url: string,
  body: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetchFn(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  let json: Record<string, unknown> = {};
  try {
    json = (await res.json()) as Record<string, unknown>;
  } catch {
    // an empty or non-JSON body is reported by status below
  }
  return { status: res.status, json };
}

function toSession(baseUrl: string, json: Record<string, unknown>): Session {
  const { user_id, device_id, access_token } = json;
  if (typeof user_id !== 'string' || typeof device_id !== 'string' || typeof access_token !== 'string') {
    throw new AuthError('M_UNKNOWN', 'The server answered without a session', 500);
  }
  return { baseUrl, userId: user_id, deviceId: device_id, accessToken: access_token };
}

function fail(status: number, json: Record<string, unknown>): never {
  throw new AuthError(
    typeof json.errcode === 'string' ? json.errcode : 'M_UNKNOWN',
    typeof json.error === 'string' ? json.error : `HTTP ${status}`,
    status,
  );
}

const DEVICE_NAME = 'Conclave Web';

export async function login(
  baseUrl: string,
  user: string,
  password: string,
  fetchFn: Fetch = fetch,
): Promise<Session> {
  const { status, json } = await post(fetchFn, `${baseUrl}/_matrix/client/v3/login`, {
    type: 'm.login.password',
    identifier: { type: 'm.id.user', user },
    password,
    initial_device_display_name: DEVICE_NAME,
  });
  if (status !== 200) fail(status, json);
  return toSession(baseUrl, json);
}

/**
 * Registers through user-interactive auth: the first request learns the flows, then the dummy
 * stage or the registration token stage (when a token was given or is the only way) completes.
 */
export async function register(
  baseUrl: string,
  username: string,
  password: string,
  token: string,
  fetchFn: Fetch = fetch,
): Promise<Session> {
  const url = `${baseUrl}/_matrix/client/v3/register?kind=user`;
  const body = { username, password, initial_device_display_name: DEVICE_NAME };
  const first = await post(fetchFn, url, body);
  if (first.status === 200) return toSession(baseUrl, first.json);
  if (first.status !== 401) fail(first.status, first.json);
  const session = typeof first.json.session === 'string' ? first.json.session : undefined;
  const flows = Array.isArray(first.json.flows) ? (first.json.flows as { stages?: unknown }[]) : [];
  const stagesOf = (f: { stages?: unknown }) => (Array.isArray(f.stages) ? (f.stages as string[]) : []);
  const single = (stage: string) => flows.some((f) => stagesOf(f).length === 1 && stagesOf(f)[0] === stage);
  let auth: Record<string, unknown>;
  if (token !== '' && single('m.login.registration_token')) {
    auth = { type: 'm.login.registration_token', token, session };
  } else if (single('m.login.dummy')) {
    auth = { type: 'm.login.dummy', session };
  } else if (single('m.login.registration_token')) {
    throw new AuthError('CONCLAVE_TOKEN_NEEDED', 'A registration token is needed', 401);
  } else {
    throw new AuthError('M_FORBIDDEN', 'Registration is not possible with this client', 403);
  }
  const second = await post(fetchFn, url, { ...body, auth });
  if (second.status !== 200) fail(second.status, second.json);
  return toSession(baseUrl, second.json);
}
