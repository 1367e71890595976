import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config.ts';
import { errors, MatrixError } from './errors.ts';
import { type Runtime, startRuntime } from './runtime.ts';
import { cliActor } from './services/admin/actor.ts';

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
  media-quarantine <mxc://server/mediaId>
      Stops serving a media (kept on disk; downloads answer 404). Audited.
  media-delete <mxc://server/mediaId>
      Deletes a media and its thumbnails; their files go when no other media has the same bytes.
      Audited.
  media-list <userId> [--limit <n>]
      Prints the media a user uploaded or created, newest first, as JSON lines.

  Accounts (the same service functions as the admin API, each action audited; output is JSON):
  list-users [--name <text>] [--deactivated] [--from <n>] [--limit <n>]
  user <userId>                         whois <userId>
  set-admin <userId> [--revoke]         reset-password <userId> [--password <p>] [--keep-devices]
  lock <userId> | unlock <userId>       suspend <userId> | unsuspend <userId>
  shadow-ban <userId> | unshadow-ban <userId>
  deactivate <userId> [--erase]         delete-device <userId> <deviceId>
  compromised <userId> [--lock] [--password <p>]
      For an account someone else got into: ends every session, deletes every device with its
      keys and to-device messages, removes the cross-signing keys (a reset at next login);
      --password sets a new password, --lock locks the account. Audited.
  server-notice <userId> <text>
  Rooms and reports:
  list-rooms [--search <text>] [--from <n>] [--limit <n>]     room <roomId>
  block-room <roomId> | unblock-room <roomId>
  delete-room <roomId> [--block] [--purge]                    make-room-admin <roomId> <userId>
      Every local member leaves, aliases go, the room is unpublished; --purge also deletes its data.
  reports [--from <n>] [--limit <n>]    report <id>             dismiss-report <id>
  purge-room-history <roomId> --before <ISO date or event ID>
      Deletes the room's history before that time (or that event's time); what the room still
      needs stays, its content pruned (spec/retention.md). Prints the counts as JSON.
  purge-room <roomId> [--block]
      Deletes a room with all its data (delete-room --purge, the admin API's room delete): every
      local member leaves, then the room's aliases, directory entry, every row and the media only
      its events named go. Prints the counts as JSON.
  rotate-key
      Retires the server's signing key (it stays published as an old key and still verifies
      what it signed) and makes a new one current. Restart running server processes afterwards.
`;

export async function runAdmin(
  argv: string[],
  out: (line: string) => void,
  /** A runtime to use instead of opening the configured one (tests). */
  given?: Runtime,
): Promise<number> {
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
      name: { type: 'string' },
      search: { type: 'string' },
      from: { type: 'string' },
      deactivated: { type: 'boolean', default: false },
      erase: { type: 'boolean', default: false },
      revoke: { type: 'boolean', default: false },
      block: { type: 'boolean', default: false },
      purge: { type: 'boolean', default: false },
      'keep-devices': { type: 'boolean', default: false },
      lock: { type: 'boolean', default: false },
      before: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    out(USAGE);
    return command ? 0 : 2;
  }
  const runtime = given ?? (await startRuntime(loadConfig()));
  try {
    const { accounts, registrationTokens } = runtime.services;
    switch (command) {
      case 'create-user': {
        const localpart = rest[0];
        if (!localpart) throw new UsageError('create-user needs a localpart');
        const password = values.password ?? randomBytes(18).toString('base64url');
        // The same path as PUT /_synapse/admin/v2/users/{userId}: created and audited.
        if (!(await accounts.isUsernameAvailable(localpart))) throw errors.userInUse();
        const userId = accounts.userIdFor(accounts.normaliseUsername(localpart));
        const { user } = await runtime.services.admin.users.upsert(cliActor(), userId, {
          password,
          admin: values.admin,
        });
        const result = { user_id: user.name };
        out(`created ${result.user_id}${values.admin ? ' (admin)' : ''}`);
        if (values.password === undefined) out(`password: ${password}`);
        return 0;
      }
      case 'create-token': {
        const row = await runtime.services.admin.tokens.create(cliActor(), {
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
      case 'media-quarantine': {
        const mxc = rest[0];
        if (!mxc) throw new UsageError('media-quarantine needs an mxc:// URI');
        await runtime.services.media.quarantineMedia(mxc, ADMIN_CLI_ACTOR);
        out(`quarantined ${mxc}`);
        return 0;
      }
      case 'media-delete': {
        const mxc = rest[0];
        if (!mxc) throw new UsageError('media-delete needs an mxc:// URI');
        const { files_deleted } = await runtime.services.media.deleteMedia(mxc, ADMIN_CLI_ACTOR);
        out(`deleted ${mxc} (${files_deleted} file${files_deleted === 1 ? '' : 's'} removed)`);
        return 0;
      }
      case 'media-list': {
        const userId = rest[0];
        if (!userId) throw new UsageError('media-list needs a user ID');
        const limit = values.limit !== undefined ? parseUses(values.limit) : 1000;
        for (const item of await runtime.services.media.listUserMedia(userId, { limit })) {
          out(JSON.stringify(item));
        }
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
      case 'rotate-key': {
        const { previous, current } = await runtime.services.serverKeys.rotate();
        out(`retired ${previous}; the signing key is now ${current}`);
        return 0;
      }
      default: {
        const result = await adminCommand(runtime, command, rest, values);
        if (result === undefined) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
        out(JSON.stringify(result));
        return 0;
      }
    }
  } finally {
    if (!given) await runtime.close();
  }
}

/** The admin API's actions from the command line; undefined for a command that is not one. */
async function adminCommand(
  runtime: Runtime,
  command: string,
  args: string[],
  values: Record<string, string | boolean | undefined>,
): Promise<unknown> {
  const { users, rooms, reports, notices } = runtime.services.admin;
  const by = cliActor();
  const arg = (i: number, what: string): string => {
    const v = args[i];
    if (v === undefined) throw new UsageError(`${command} needs ${what}`);
    return v;
  };
  const num = (name: string, fallback: number) =>
    typeof values[name] === 'string' ? parseUses(values[name] as string) : fallback;
  switch (command) {
    case 'list-users':
      return users.list(
        {
          ...(typeof values.name === 'string' ? { name: values.name } : {}),
          deactivated: values.deactivated === true,
          locked: true,
        },
        { from: num('from', 0), limit: num('limit', 100), orderBy: 'name', dir: 'f' },
      );
    case 'user':
      return users.get(arg(0, 'a user ID'));
    case 'whois':
      return users.whois(arg(0, 'a user ID'));
    case 'set-admin':
      await users.setAdmin(by, arg(0, 'a user ID'), values.revoke !== true);
      return users.get(arg(0, 'a user ID'));
    case 'reset-password': {
      const password =
        typeof values.password === 'string' ? values.password : randomBytes(18).toString('base64url');
      await users.resetPassword(by, arg(0, 'a user ID'), password, values['keep-devices'] !== true);
      return values.password === undefined ? { password } : {};
    }
    case 'lock':
    case 'unlock':
      await users.lockUser(arg(0, 'a user ID'), command === 'lock', by);
      return {};
    case 'suspend':
    case 'unsuspend':
      await users.suspendUser(arg(0, 'a user ID'), command === 'suspend', by);
      return {};
    case 'shadow-ban':
    case 'unshadow-ban':
      await users.shadowBan(by, arg(0, 'a user ID'), command === 'shadow-ban');
      return {};
    case 'deactivate':
      await users.deactivate(by, arg(0, 'a user ID'), values.erase === true);
      return {};
    case 'compromised':
      return users.markCompromised(by, arg(0, 'a user ID'), {
        lock: values.lock === true,
        ...(typeof values.password === 'string' ? { newPassword: values.password } : {}),
      });
    case 'delete-device':
      return { deleted: await users.deleteDevices(by, arg(0, 'a user ID'), [arg(1, 'a device ID')]) };
    case 'server-notice':
      return notices.send(by, arg(0, 'a user ID'), { msgtype: 'm.text', body: arg(1, 'the text') });
    case 'list-rooms':
      return rooms.list({
        ...(typeof values.search === 'string' ? { searchTerm: values.search } : {}),
        from: num('from', 0),
        limit: num('limit', 100),
        orderBy: 'name',
        dir: 'f',
      });
    case 'room':
      return rooms.details(arg(0, 'a room ID'));
    case 'block-room':
    case 'unblock-room':
      return rooms.block(by, arg(0, 'a room ID'), command === 'block-room');
    case 'delete-room':
    case 'purge-room':
      // The admin API's room delete: purge-room is delete-room --purge.
      return rooms.deleteRoom(by, arg(0, 'a room ID'), {
        block: values.block === true,
        purge: command === 'purge-room' || values.purge === true,
      });
    case 'make-room-admin':
      return rooms.makeRoomAdmin(by, arg(0, 'a room ID'), arg(1, 'a user ID'));
    case 'reports':
      return reports.list({}, { from: num('from', 0), limit: num('limit', 100), dir: 'b' });
    case 'report':
      return reports.get(parseUses(arg(0, 'a report ID')));
    case 'dismiss-report':
      await reports.dismiss(by, parseUses(arg(0, 'a report ID')));
      return {};
    default:
      return undefined;
  }
}

class UsageError extends Error {}

/** The audit log's actor for actions taken with this command. */
export const ADMIN_CLI_ACTOR = 'admin-cli';

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
