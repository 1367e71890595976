import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config.ts';
import { MatrixError } from './errors.ts';
import { startRuntime } from './runtime.ts';

/**
 * `npm run admin -- <command>`: administration against the configured database, through the same
 * services the HTTP API uses. With the embedded database, stop the server first (PGlite allows
 * one process; a lock file says so).
 */
const USAGE = `usage: npm run admin -- <command> [options]

commands:
  create-user <localpart> [--password <password>] [--admin]
      Creates a user. Without --password a random one is generated and printed.
  create-token [--token <token>] [--uses <n>] [--expires <ISO date or <n>d>]
      Creates a registration token (for CONCLAVE_REGISTRATION=token) and prints it.
  list-tokens
      Lists registration tokens with their uses and expiry.
  audit-log [--since <ISO date or <n>d>] [--action <name>] [--after-id <n>] [--limit <n>]
      Prints audit log entries as JSON lines, oldest first (spec/audit-log.md). Page with
      --after-id set to the last id printed.
  purge-room-history <roomId> --before <ISO date or event ID>
      Deletes the room's history before that time (or that event's time); what the room still
      needs stays, its content pruned (spec/retention.md). Prints the counts as JSON.
  delete-room <roomId>
      Every local member leaves, then the room's aliases, directory entry and every row go.
  rotate-key
      Retires the server's signing key (it stays published as an old key and still verifies
      what it signed) and makes a new one current. Restart running server processes afterwards.
`;

export async function runAdmin(argv: string[], out: (line: string) => void): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      password: { type: 'string' },
      admin: { type: 'boolean', default: false },
      token: { type: 'string' },
      uses: { type: 'string' },
      expires: { type: 'string' },
      since: { type: 'string' },
      action: { type: 'string' },
      'after-id': { type: 'string' },
      limit: { type: 'string' },
      before: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    out(USAGE);
    return command ? 0 : 2;
  }
  const config = loadConfig();
  const runtime = await startRuntime(config);
  try {
    const { accounts, registrationTokens } = runtime.services;
    switch (command) {
      case 'create-user': {
        const localpart = rest[0];
        if (!localpart) throw new UsageError('create-user needs a localpart');
        const password = values.password ?? randomBytes(18).toString('base64url');
        const result = await accounts.createAccount({
          localpart,
          password,
          admin: values.admin,
          login: false,
        });
        out(`created ${result.user_id}${values.admin ? ' (admin)' : ''}`);
        if (values.password === undefined) out(`password: ${password}`);
        return 0;
      }
      case 'create-token': {
        const row = await registrationTokens.create({
          ...(values.token !== undefined ? { token: values.token } : {}),
          usesAllowed: values.uses !== undefined ? parseUses(values.uses) : null,
          expiryTime: values.expires !== undefined ? parseExpiry(values.expires) : null,
        });
        out(`token: ${row.token}`);
        out(`uses allowed: ${row.uses_allowed ?? 'unlimited'}`);
        out(`expires: ${row.expiry_time !== null ? new Date(row.expiry_time).toISOString() : 'never'}`);
        return 0;
      }
      case 'list-tokens': {
        for (const row of await registrationTokens.list()) {
          const expiry = row.expiry_time !== null ? new Date(row.expiry_time).toISOString() : 'never';
          out(`${row.token}\tused ${row.completed}/${row.uses_allowed ?? 'unlimited'}\texpires ${expiry}`);
        }
        return 0;
      }
      case 'audit-log': {
        const sinceTs = values.since !== undefined ? parseSince(values.since) : undefined;
        const afterId = values['after-id'] !== undefined ? parseUses(values['after-id']) : undefined;
        const limit = values.limit !== undefined ? parseUses(values.limit) : 1000;
        const records = await runtime.services.audit.list({
          ...(sinceTs !== undefined ? { sinceTs } : {}),
          ...(afterId !== undefined ? { afterId } : {}),
          ...(values.action !== undefined ? { action: values.action } : {}),
          limit,
        });
        for (const record of records) out(JSON.stringify(record));
        return 0;
      }
      case 'purge-room-history': {
        const roomId = rest[0];
        if (!roomId) throw new UsageError('purge-room-history needs a room ID');
        if (values.before === undefined) throw new UsageError('purge-room-history needs --before');
        const before = values.before.startsWith('$') ? values.before : Date.parse(values.before);
        if (typeof before === 'number' && Number.isNaN(before))
          throw new UsageError('--before must be an ISO date or an event ID');
        const result = await runtime.services.retention.purgeRoomHistory(roomId, {
          before,
          actor: 'admin:cli',
        });
        out(JSON.stringify(result ?? { roomId, eventsDeleted: 0, eventsPruned: 0, bytesDeleted: 0 }));
        return 0;
      }
      case 'delete-room': {
        const roomId = rest[0];
        if (!roomId) throw new UsageError('delete-room needs a room ID');
        out(JSON.stringify(await runtime.services.retention.deleteRoom(roomId, { actor: 'admin:cli' })));
        return 0;
      }
      case 'rotate-key': {
        const { previous, current } = await runtime.services.serverKeys.rotate();
        out(`retired ${previous}; the signing key is now ${current}`);
        return 0;
      }
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } finally {
    await runtime.close();
  }
}

class UsageError extends Error {}

function parseUses(raw: string): number {
  if (!/^\d+$/.test(raw)) throw new UsageError('--uses must be a whole number');
  return Number(raw);
}

/** An ISO date, or `<n>d` for that many days ago. */
function parseSince(raw: string): number {
  const days = /^(\d+)d$/.exec(raw);
  if (days) return Date.now() - Number(days[1]) * 86_400_000;
  const ts = Date.parse(raw);
  if (Number.isNaN(ts)) throw new UsageError('--since must be an ISO date or a number of days like 7d');
  return ts;
}

function parseExpiry(raw: string): number {
  const days = /^(\d+)d$/.exec(raw);
  if (days) return Date.now() + Number(days[1]) * 86_400_000;
  const ts = Date.parse(raw);
  if (Number.isNaN(ts)) throw new UsageError('--expires must be an ISO date or a number of days like 7d');
  return ts;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  runAdmin(process.argv.slice(2), (line) => process.stdout.write(`${line}\n`))
    .then((code) => process.exit(code))
    .catch((err: unknown) => {
      if (err instanceof UsageError || err instanceof ConfigError) {
        process.stderr.write(`admin: ${err.message}\n\n${USAGE}`);
        process.exit(2);
      }
      if (err instanceof MatrixError) {
        process.stderr.write(`admin: ${err.errcode}: ${err.message}\n`);
        process.exit(1);
      }
      process.stderr.write(`admin: ${(err as Error).message}\n`);
      process.exit(1);
    });
}
