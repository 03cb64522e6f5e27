import type { GatewayConfig, Role, WhoAmI } from "./api";

export interface Session {
  who: WhoAmI;
  config: GatewayConfig;
}

export function may(session: Session, what: "run" | "decide" | "admin"): boolean {
  const grants: Record<Role, string[]> = {
    viewer: [],
    operator: ["run"],
    approver: ["decide"],
    admin: ["run", "decide", "admin"],
  };
  return grants[session.who.role].includes(what);
}
