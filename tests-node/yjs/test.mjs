// The official `yjs` + `y-websocket` client against the real switchboard binary.
//
// Five providers join one document at /yjs/{doc} and type into the same position at once;
// all must end with the identical text holding every character. A late joiner then gets the
// whole document, and awareness (who is here) reaches everyone.
//
//   cargo build -p switchboard && npm test
//
// SWITCHBOARD_BIN names the binary (default ../../target/debug/switchboard). The server
// runs on a free port with a temporary --data-dir; only that child process is stopped.
// SHOW_LOGS=1 prints the server's log at the end.

import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import assert from 'node:assert/strict'

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const here = dirname(fileURLToPath(import.meta.url))
const bin = resolve(here, process.env.SWITCHBOARD_BIN || '../../target/debug/switchboard')
const EDITORS = 5
const PER_EDITOR = 40
const LETTERS = 'abcdefghij'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves when `cond()` holds, checking every 20 ms; rejects after `ms`. */
async function until (what, cond, ms = 20000) {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

/** Starts the server; resolves with { child, url, logs } once it logs `listening`. */
function startServer (dataDir) {
  if (!existsSync(bin)) {
    throw new Error(`no server binary at ${bin}: run \`cargo build -p switchboard\` or set SWITCHBOARD_BIN`)
  }
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_'))
  )
  const child = spawn(bin, [
    '--listen', '127.0.0.1:0',
    '--data-dir', dataDir,
    '--log', 'info',
    '--log-format', 'text'
  ], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const logs = []
  return new Promise((resolve, reject) => {
    let buffered = ''
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${logs.join('\n')}`)), 30000)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`server exited early (${code ?? signal}):\n${logs.join('\n')}`))
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (chunk) => {
      buffered += chunk
      let nl
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        logs.push(line)
        const m = line.includes('listening') && line.match(/addr=(\S+)/)
        if (m) {
          clearTimeout(timer)
          resolve({ child, url: `ws://${m[1]}/yjs`, logs })
        }
      }
    })
  })
}

function connect (url, room, name) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: WebSocket,
    // Providers in one process would otherwise sync over BroadcastChannel, not the server.
    disableBc: true
  })
  provider.awareness.setLocalStateField('user', { name })
  return { doc, provider, text: doc.getText('text'), name }
}

async function main () {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-yjs-'))
  const server = await startServer(dataDir)
  const editors = []
  try {
    const room = `interop-${process.pid}`
    for (let i = 0; i < EDITORS; i++) editors.push(connect(server.url, room, `editor${i}`))
    await until('every provider synced', () => editors.every((e) => e.provider.synced))

    // Everyone types at position 0 at once: each round, all five insert before any of
    // them hears from the others.
    for (let round = 0; round < PER_EDITOR; round++) {
      editors.forEach((e, i) => e.text.insert(0, LETTERS[i]))
      await sleep(round % 4 === 0 ? 5 : 0)
    }
    const total = EDITORS * PER_EDITOR
    await until(`all ${total} characters everywhere`, () =>
      editors.every((e) => e.text.length === total)
    )
    const text = editors[0].text.toString()
    for (const e of editors) assert.equal(e.text.toString(), text, `${e.name} differs`)
    for (let i = 0; i < EDITORS; i++) {
      const n = [...text].filter((c) => c === LETTERS[i]).length
      assert.equal(n, PER_EDITOR, `editor${i} typed ${PER_EDITOR} characters, ${n} are in the text`)
    }
    assert.equal(text.length, total)

    // Awareness: everyone sees everyone.
    await until('every editor sees all five users', () =>
      editors.every((e) => {
        const names = [...e.provider.awareness.getStates().values()].map((s) => s.user?.name)
        return editors.every((other) => names.includes(other.name))
      })
    )

    // A late joiner gets the whole document.
    const late = connect(server.url, room, 'late')
    editors.push(late)
    await until('the late joiner synced', () => late.provider.synced)
    assert.equal(late.text.toString(), text)

    // A provider that leaves is removed from the others' awareness.
    const leaving = editors.shift()
    const leavingId = leaving.doc.clientID
    leaving.provider.destroy()
    await until('the leaver removed from awareness', () =>
      editors.every((e) => !e.provider.awareness.getStates().has(leavingId))
    )

    console.log(`ok: ${EDITORS} y-websocket providers converged on ${total} characters; late joiner and awareness ok`)
  } finally {
    for (const e of editors) e.provider.destroy()
    server.child.removeAllListeners('exit')
    const exited = new Promise((resolve) => server.child.once('exit', resolve))
    server.child.kill('SIGTERM')
    await Promise.race([exited, sleep(10000)])
    rmSync(dataDir, { recursive: true, force: true })
    if (process.env.SHOW_LOGS) console.log(server.logs.join('\n'))
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err)
    process.exit(1)
  }
)
