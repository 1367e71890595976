import type { Bus } from '../bus/bus.ts';
import type { Config } from '../config.ts';
import type { Db } from '../storage/connect.ts';
import { AccountsService } from './accounts.service.ts';
import { ProfileService } from './profile.service.ts';
import { RegistrationTokensService } from './registration-tokens.service.ts';
import { ServerKeysService } from './server-keys.service.ts';
import { UiaService } from './uia.service.ts';

/** Every service of one server process, built once and shared by routes, the admin command and tests. */
export interface Services {
  config: Config;
  db: Db;
  bus: Bus;
  uia: UiaService;
  accounts: AccountsService;
  profile: ProfileService;
  registrationTokens: RegistrationTokensService;
  serverKeys: ServerKeysService;
}

export async function createServices(deps: { config: Config; db: Db; bus: Bus }): Promise<Services> {
  const { config, db, bus } = deps;
  const uia = new UiaService(db);
  const registrationTokens = new RegistrationTokensService(db);
  const serverKeys = new ServerKeysService(db, config.serverName);
  await serverKeys.init();
  return {
    config,
    db,
    bus,
    uia,
    registrationTokens,
    serverKeys,
    accounts: new AccountsService(db, config, uia, registrationTokens),
    profile: new ProfileService(db, config.serverName),
  };
}
