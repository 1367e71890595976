import { Type } from 'typebox';

/** Pieces of request schemas shared by several client routes. */
export const V3 = '/_matrix/client/v3';
export const V1 = '/_matrix/client/v1';

/** Any JSON object (account data content, auth dicts). */
export const AnyObject = Type.Record(Type.String(), Type.Unknown());

export const AuthDict = Type.Optional(AnyObject);

export const UserIdentifier = Type.Object(
  { type: Type.String({ maxLength: 255 }) },
  { additionalProperties: true },
);

export const DeviceId = Type.String({ minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7E]+$' });

export const DisplayName = Type.String({ maxLength: 256 });

export const Password = Type.String({ maxLength: 512 });
