import { isValidUserId, serverNameOf } from '../../protocol/identifiers.ts';
import { isJsonObject, type JsonObject } from '../../protocol/json.ts';
import type { RemoteKeys, UpdateOutcome } from '../../services/remote-keys.service.ts';
import type { ToDeviceService } from '../../services/to-device.service.ts';
import type { EduDispatcher } from './edus.ts';

/** Longest event type and message_id taken from another server. */
const MAX_ID_LENGTH = 255;

export interface E2eeEduDeps {
  serverName: string;
  remoteKeys: RemoteKeys;
  toDevice: ToDeviceService;
}

/** What the handlers made of the EDUs they were given (for tests and metrics). */
export interface E2eeEduCounts {
  deviceListUpdates: Record<UpdateOutcome, number>;
  signingKeyUpdates: Record<UpdateOutcome, number>;
  /** m.direct_to_device EDUs refused as malformed or from a server that is not the sender's. */
  toDeviceRefused: number;
  /** Messages stored for local devices. */
  toDeviceDelivered: number;
}

const outcomes = (): Record<UpdateOutcome, number> => ({ applied: 0, ignored: 0, resync: 0, refused: 0 });

/**
 * The inbound handlers of m.device_list_update, m.signing_key_update and m.direct_to_device
 * (server-server API: Device Management, End-to-End Encryption, Send-to-device messaging). What
 * each checks, and drops silently when it does not hold:
 * - device list and signing key updates: the user is of the sending server (RemoteKeys checks
 *   this and every key, as a local upload is checked; a gap in stream_id/prev_id resyncs);
 * - to-device: `sender` is a user of the sending server, `type` and `message_id` are non-empty
 *   strings, `messages` is an object of objects of objects; only this server's users are
 *   delivered to, a message_id received before from the same server is ignored.
 */
export function registerE2eeEdus(dispatcher: EduDispatcher, deps: E2eeEduDeps): E2eeEduCounts {
  const counts: E2eeEduCounts = {
    deviceListUpdates: outcomes(),
    signingKeyUpdates: outcomes(),
    toDeviceRefused: 0,
    toDeviceDelivered: 0,
  };
  dispatcher.register('m.device_list_update', async (origin, content) => {
    counts.deviceListUpdates[await deps.remoteKeys.applyDeviceListUpdate(origin, content)]++;
  });
  dispatcher.register('m.signing_key_update', async (origin, content) => {
    counts.signingKeyUpdates[await deps.remoteKeys.applySigningKeyUpdate(origin, content)]++;
  });
  dispatcher.register('m.direct_to_device', async (origin, content) => {
    const parsed = parseDirectToDevice(origin, deps.serverName, content);
    if (!parsed) {
      counts.toDeviceRefused++;
      return;
    }
    counts.toDeviceDelivered += await deps.toDevice.receiveRemote({ origin, ...parsed });
  });
  return counts;
}

function parseDirectToDevice(
  origin: string,
  self: string,
  content: JsonObject,
):
  | { sender: string; type: string; messageId: string; messages: Record<string, Record<string, JsonObject>> }
  | undefined {
  const { sender, type, message_id: messageId, messages } = content;
  if (typeof sender !== 'string' || !isValidUserId(sender) || serverNameOf(sender) !== origin)
    return undefined;
  if (origin === self) return undefined;
  if (typeof type !== 'string' || type === '' || type.length > MAX_ID_LENGTH) return undefined;
  if (typeof messageId !== 'string' || messageId === '' || messageId.length > MAX_ID_LENGTH) return undefined;
  if (!isJsonObject(messages)) return undefined;
  const out: Record<string, Record<string, JsonObject>> = {};
  for (const [userId, byDevice] of Object.entries(messages)) {
    if (!isValidUserId(userId) || !isJsonObject(byDevice)) return undefined;
    const devices: Record<string, JsonObject> = {};
    for (const [deviceId, message] of Object.entries(byDevice)) {
      if (deviceId === '' || deviceId.length > MAX_ID_LENGTH || !isJsonObject(message)) return undefined;
      devices[deviceId] = message;
    }
    out[userId] = devices;
  }
  return { sender, type, messageId, messages: out };
}
