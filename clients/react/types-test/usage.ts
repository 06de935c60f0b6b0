// Compiles only if the declarations describe the API the README shows.
import { createElement, type ReactElement } from "react";
import { Switchboard } from "@switchboard/client";
import {
  SwitchboardProvider,
  usePresence,
  useRoom,
  useSwitchboard,
  type Member,
  type Message,
  type RoomView,
} from "@switchboard/react";

function Chat({ name }: { name: string }): ReactElement {
  const { client, state } = useSwitchboard();
  const knownState: "connecting" | "open" | "reconnecting" | "closed" = state;
  const conn: string | null = client.conn;
  const view: RoomView = useRoom("chat:lobby", { presence: { name }, limit: 100 });
  const { messages, members, publish, history, status, recovery, room, error } = view;
  const recoveryStatus: "recovered" | "gap" | null = recovery.status;
  const missed: number = recovery.count;
  void [recoveryStatus, missed, recovery.reason?.toUpperCase()];
  const loadEarlier = async (): Promise<Message[]> => (await history({ limit: 50, reverse: true })).messages;
  void loadEarlier;
  const first: Message | undefined = messages[0];
  const member: Member | undefined = members[0];
  const roomStatus: "joining" | "joined" | "closed" = status;
  const code: string | undefined = error?.code;
  void [knownState, conn, first, member, roomStatus, code, room?.name];
  const send = async (): Promise<number> => (await publish({ text: "hi" }, { timeoutMs: 5000, echo: false })).offset;
  const byName = usePresence("chat:lobby");
  const byRoom = usePresence(room);
  void byRoom.members.length;
  return createElement(
    "button",
    { onClick: () => void send().then(() => byName.setPresence({ name, typing: false })) },
    String(byName.members.length),
  );
}

export function App(): ReactElement {
  return createElement(
    SwitchboardProvider,
    { url: "ws://localhost:8080/ws", options: { backoff: { baseMs: 500 } } },
    createElement(Chat, { name: "ada" }),
  );
}

export function WithClient(client: Switchboard): ReactElement {
  return createElement(SwitchboardProvider, { client }, createElement(Chat, { name: "grace" }));
}

// Tokens on the provider and room tokens on useRoom.
export function WithTokens(): ReturnType<typeof SwitchboardProvider> {
  return SwitchboardProvider({ url: "ws://x/ws", getToken: async () => "jwt", children: null });
}
export function OrderRoom(): null {
  useRoom("order:1", { getToken: async (room: string) => `token for ${room}` });
  return null;
}
