import { oneTimeKeys, testDevice } from './e2ee.ts';
import { type Login, PASSWORD, type TestServer } from './server.ts';

/**
 * What a device holds on the server, for the key management tests: its keys (device keys,
 * one-time keys, fallback key), a waiting to-device message and its tokens.
 */

/** Uploads device keys, two one-time keys and a fallback key for `who`, and has `sender` send it a to-device message. */
export async function equipDevice(s: TestServer, who: Login, sender: Login): Promise<void> {
  const device = testDevice(who);
  const upload = await s.request('POST', '/_matrix/client/v3/keys/upload', {
    token: who.access_token,
    body: {
      device_keys: device.deviceKeys,
      one_time_keys: oneTimeKeys(device, ['a', 'b']),
      fallback_keys: oneTimeKeys(device, ['f'], true),
    },
  });
  if (upload.statusCode !== 200) throw new Error(`keys/upload: ${upload.statusCode} ${upload.body}`);
  const sent = await s.request('PUT', `/_matrix/client/v3/sendToDevice/m.test/${who.device_id}`, {
    token: sender.access_token,
    body: { messages: { [who.user_id]: { [who.device_id]: { n: 1 } } } },
  });
  if (sent.statusCode !== 200) throw new Error(`sendToDevice: ${sent.statusCode} ${sent.body}`);
}

/** Rows the server holds for a device, per table. */
export async function deviceRows(s: TestServer, userId: string, deviceId: string) {
  const db = s.runtime.services.db;
  const count = async (
    table:
      | 'devices'
      | 'access_tokens'
      | 'refresh_tokens'
      | 'e2e_device_keys'
      | 'e2e_one_time_keys'
      | 'e2e_fallback_keys',
  ) => {
    const r = await db
      .selectFrom(table)
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('user_id', '=', userId)
      .where('device_id', '=', deviceId)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  };
  const toDevice = await db
    .selectFrom('to_device_messages')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('recipient_user_id', '=', userId)
    .where('recipient_device_id', '=', deviceId)
    .executeTakeFirstOrThrow();
  return {
    devices: await count('devices'),
    access_tokens: await count('access_tokens'),
    refresh_tokens: await count('refresh_tokens'),
    device_keys: await count('e2e_device_keys'),
    one_time_keys: await count('e2e_one_time_keys'),
    fallback_keys: await count('e2e_fallback_keys'),
    to_device: Number(toDevice.n),
  };
}

export const NOTHING_LEFT = {
  devices: 0,
  access_tokens: 0,
  refresh_tokens: 0,
  device_keys: 0,
  one_time_keys: 0,
  fallback_keys: 0,
  to_device: 0,
};

/** Publishes cross-signing keys for `who`, answering the password challenge. */
export async function uploadCrossSigning(s: TestServer, who: Login, body: Record<string, unknown>) {
  const url = '/_matrix/client/v3/keys/device_signing/upload';
  const first = await s.request('POST', url, { token: who.access_token, body });
  const session = first.json().session as string | undefined;
  if (first.statusCode !== 401 || !session)
    throw new Error(`device_signing: ${first.statusCode} ${first.body}`);
  const auth = {
    type: 'm.login.password',
    session,
    identifier: { type: 'm.id.user', user: who.user_id },
    password: PASSWORD,
  };
  const res = await s.request('POST', url, { token: who.access_token, body: { ...body, auth } });
  if (res.statusCode !== 200) throw new Error(`device_signing: ${res.statusCode} ${res.body}`);
}
