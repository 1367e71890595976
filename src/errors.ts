/**
 * The one error type of the API: a Matrix errcode, the HTTP status it maps to, and a message that
 * is safe to show a client (never a token, password, key or message body).
 */
export class MatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    /** Extra fields merged into the response body, e.g. retry_after_ms or UIA flows. */
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'MatrixError';
  }

  toJSON(): Record<string, unknown> {
    return { errcode: this.errcode, error: this.message, ...this.extra };
  }
}

export const errors = {
  forbidden: (msg = 'Forbidden') => new MatrixError(403, 'M_FORBIDDEN', msg),
  notFound: (msg = 'Not found') => new MatrixError(404, 'M_NOT_FOUND', msg),
  unrecognized: (msg = 'Unrecognized request', status = 404) =>
    new MatrixError(status, 'M_UNRECOGNIZED', msg),
  notJson: (msg = 'Content not JSON') => new MatrixError(400, 'M_NOT_JSON', msg),
  badJson: (msg: string) => new MatrixError(400, 'M_BAD_JSON', msg),
  missingParam: (msg: string) => new MatrixError(400, 'M_MISSING_PARAM', msg),
  invalidParam: (msg: string) => new MatrixError(400, 'M_INVALID_PARAM', msg),
  missingToken: () => new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access token'),
  unknownToken: (softLogout = false) =>
    new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Unknown or expired access token', { soft_logout: softLogout }),
  userInUse: () => new MatrixError(400, 'M_USER_IN_USE', 'User ID already taken'),
  invalidUsername: (msg = 'Invalid username') => new MatrixError(400, 'M_INVALID_USERNAME', msg),
  limitExceeded: (retryAfterMs: number) =>
    new MatrixError(429, 'M_LIMIT_EXCEEDED', 'Too many requests', { retry_after_ms: retryAfterMs }),
  tooLarge: (msg = 'Request too large') => new MatrixError(413, 'M_TOO_LARGE', msg),
  unknown: (msg = 'Internal server error') => new MatrixError(500, 'M_UNKNOWN', msg),
  weakPassword: (msg: string) => new MatrixError(400, 'M_WEAK_PASSWORD', msg),
  guestAccessForbidden: () => new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'Guest access is disabled'),
  unknownLoginType: (type: string) => new MatrixError(400, 'M_UNKNOWN', `Unsupported login type: ${type}`),
  badState: (msg: string) => new MatrixError(400, 'M_BAD_STATE', msg),
  invalidSignature: (msg: string) => new MatrixError(400, 'M_INVALID_SIGNATURE', msg),
  /** MSC3939: the account is locked by an admin; the client should keep its data (soft logout). */
  userLocked: () =>
    new MatrixError(401, 'M_USER_LOCKED', 'This account has been locked', { soft_logout: true }),
  /** MSC3823: the account is suspended; it can read but not write. */
  userSuspended: () =>
    new MatrixError(403, 'M_USER_SUSPENDED', 'This account is suspended: it can read but not write'),
  userDeactivated: () => new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated'),
};
