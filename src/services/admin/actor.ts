/**
 * Who performs an admin action: a server admin's user ID (HTTP API), `cli:<name>` (the admin
 * command), or `detector:<name>` / `policy:<name>` when the server acts on its own. `address` is
 * the client's address when a request caused it. Every admin action records both in the audit log.
 */
export interface AdminActor {
  actor: string;
  address?: string | null;
}

/** The actor of the admin command: the operating-system user who ran it. */
export function cliActor(): AdminActor {
  return { actor: `cli:${process.env.USER ?? process.env.LOGNAME ?? 'unknown'}`, address: null };
}
