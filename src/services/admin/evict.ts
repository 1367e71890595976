import * as repo from '../../storage/admin.repository.ts';
import type { Db } from '../../storage/connect.ts';
import type { RoomsService } from '../rooms.service.ts';
import { systemSession } from './users.admin.ts';

/**
 * Every local member of a room (joined, invited, knocking) leaves it, each with a leave event of
 * their own (an invite is rejected, a knock withdrawn), for a room's deletion. Returns who left
 * and whom it failed for.
 */
export async function removeLocalMembers(
  db: Db,
  rooms: RoomsService,
  roomId: string,
  reason: string,
): Promise<{ kicked: string[]; failed: string[] }> {
  const local = (await repo.membersIn(db, roomId, ['join', 'invite', 'knock'])).filter((u) =>
    rooms.isLocalUser(u),
  );
  const kicked: string[] = [];
  const failed: string[] = [];
  for (const userId of local) {
    try {
      await rooms.leave(systemSession(userId), roomId, reason);
      kicked.push(userId);
    } catch {
      failed.push(userId);
    }
  }
  return { kicked, failed };
}
