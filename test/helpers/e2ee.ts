import { randomBytes } from 'node:crypto';
import * as ed from '@noble/ed25519';
import { encodeBase64 } from '../../src/protocol/base64.ts';
import { encodeKey, publicKeyFromSeed, signJson } from '../../src/protocol/signing.ts';
import type { Login } from './server.ts';

/**
 * Real signed end-to-end encryption keys for tests, built the way clients build them: ed25519
 * signatures over canonical JSON through src/protocol/signing.ts.
 */

// biome-ignore lint/suspicious/noExplicitAny: key objects are read loosely in tests
export type Json = Record<string, any>;

export interface Ed25519Pair {
  seed: Uint8Array;
  /** Unpadded base64 public key. */
  publicKey: string;
}

export function ed25519Pair(): Ed25519Pair {
  const seed = ed.utils.randomSecretKey();
  return { seed, publicKey: encodeKey(publicKeyFromSeed(seed)) };
}

export function curve25519Key(): string {
  return encodeBase64(randomBytes(32));
}

/**
 * Adds `signer`'s signature with key ID `keyId`. signJson only takes server-key style key IDs, and
 * cross-signing key IDs hold base64 (`+`, `/`): sign under a neutral ID, then rename it (the
 * signature does not cover `signatures`).
 */
export function sign<T extends Json>(object: T, signer: string, keyId: string, seed: Uint8Array): T {
  const { signatures, ...rest } = object as Json;
  const signed = signJson(rest, signer, 'ed25519:tmp', seed);
  const signature = signed.signatures[signer]!['ed25519:tmp']!;
  const merged: Json = { ...(signatures ?? {}) };
  merged[signer] = { ...(merged[signer] ?? {}), [keyId]: signature };
  return { ...rest, signatures: merged } as unknown as T;
}

/** A device's keys: its ed25519 pair, curve25519 key, and signed DeviceKeys object. */
export interface TestDevice {
  userId: string;
  deviceId: string;
  ed25519: Ed25519Pair;
  curve25519: string;
  deviceKeys: Json;
}

export function testDevice(login: Pick<Login, 'user_id' | 'device_id'>): TestDevice {
  const pair = ed25519Pair();
  const curve = curve25519Key();
  const unsigned = {
    user_id: login.user_id,
    device_id: login.device_id,
    algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: {
      [`curve25519:${login.device_id}`]: curve,
      [`ed25519:${login.device_id}`]: pair.publicKey,
    },
  };
  return {
    userId: login.user_id,
    deviceId: login.device_id,
    ed25519: pair,
    curve25519: curve,
    deviceKeys: sign(unsigned, login.user_id, `ed25519:${login.device_id}`, pair.seed),
  };
}

/** Signed curve25519 one-time keys (or fallback keys), named `signed_curve25519:<id>`. */
export function oneTimeKeys(device: TestDevice, ids: string[], fallback = false): Json {
  const out: Json = {};
  for (const id of ids) {
    const key: Json = { key: curve25519Key(), ...(fallback ? { fallback: true } : {}) };
    out[`signed_curve25519:${id}`] = sign(
      key,
      device.userId,
      `ed25519:${device.deviceId}`,
      device.ed25519.seed,
    );
  }
  return out;
}

/** A user's three cross-signing keys, the self-signing and user-signing ones signed by the master. */
export interface CrossSigning {
  master: Ed25519Pair;
  selfSigning: Ed25519Pair;
  userSigning: Ed25519Pair;
  body: { master_key: Json; self_signing_key: Json; user_signing_key: Json };
}

export function crossSigningKey(userId: string, usage: string, pair: Ed25519Pair): Json {
  return { user_id: userId, usage: [usage], keys: { [`ed25519:${pair.publicKey}`]: pair.publicKey } };
}

export function crossSigning(userId: string): CrossSigning {
  const master = ed25519Pair();
  const selfSigning = ed25519Pair();
  const userSigning = ed25519Pair();
  const byMaster = (key: Json) => sign(key, userId, `ed25519:${master.publicKey}`, master.seed);
  return {
    master,
    selfSigning,
    userSigning,
    body: {
      master_key: crossSigningKey(userId, 'master', master),
      self_signing_key: byMaster(crossSigningKey(userId, 'self_signing', selfSigning)),
      user_signing_key: byMaster(crossSigningKey(userId, 'user_signing', userSigning)),
    },
  };
}
