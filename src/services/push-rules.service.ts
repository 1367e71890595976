import type { Session } from './accounts.service.ts';
import { defaultPushRules, type PushRuleset } from './push-rules.ts';

/**
 * The push rules of users. For now every user has the server-default rules and cannot change
 * them; stored changes (PUT/DELETE of rules, `m.push_rules` account data) will come here.
 */
export class PushRulesService {
  /** GET /pushrules/global/: the user's global rule set. */
  globalRuleset(session: Session): PushRuleset {
    return defaultPushRules(session.userId);
  }

  /** GET /pushrules/: every rule set of the user (only `global` exists). */
  allRulesets(session: Session): { global: PushRuleset } {
    return { global: this.globalRuleset(session) };
  }
}
