import { useSyncExternalStore } from 'react';
import type { ConclaveClient } from '../matrix/client.ts';

/** Re-renders the caller whenever the client reports a change. */
export function useClientVersion(client: ConclaveClient): number {
  return useSyncExternalStore(client.subscribe, client.getVersion);
}

export function useHashRoute(): string {
  return useSyncExternalStore(
    (cb) => {
      window.addEventListener('hashchange', cb);
      return () => window.removeEventListener('hashchange', cb);
    },
    () => window.location.hash,
  );
}

export function roomIdFromHash(hash: string): string | null {
  const m = /^#\/room\/(.+)$/.exec(hash);
  return m ? decodeURIComponent(m[1]!) : null;
}

export function openRoom(roomId: string | null): void {
  window.location.hash = roomId ? `#/room/${encodeURIComponent(roomId)}` : '';
}
