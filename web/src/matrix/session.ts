/** The signed-in session, kept in localStorage so that a reload stays signed in. */
export interface Session {
  baseUrl: string;
  userId: string;
  deviceId: string;
  accessToken: string;
}

const KEY = 'conclave.session';

export function loadSession(storage: Storage = localStorage): Session | null {
  const raw = storage.getItem(KEY);
  if (!raw) return null;
  try {
    const s = JSON.parse(raw) as Partial<Session>;
    if (
      typeof s.baseUrl === 'string' &&
      typeof s.userId === 'string' &&
      typeof s.deviceId === 'string' &&
      typeof s.accessToken === 'string'
    ) {
      return { baseUrl: s.baseUrl, userId: s.userId, deviceId: s.deviceId, accessToken: s.accessToken };
    }
  } catch {
    // fall through: a damaged entry is dropped
  }
  storage.removeItem(KEY);
  return null;
}

export function saveSession(session: Session, storage: Storage = localStorage): void {
  storage.setItem(KEY, JSON.stringify(session));
}

export function clearSession(storage: Storage = localStorage): void {
  storage.removeItem(KEY);
}

/** The homeserver is the origin that served the client (the API lives beside it). */
export function homeserverUrl(location: { origin: string }): string {
  return location.origin;
}
