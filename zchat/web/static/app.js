// zchat web page: JSON over a WebSocket to the broker's web door (docs/web.md).
// Everything shown is set with textContent: nothing anyone sends is ever parsed as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const STORE_KEY = "zchat";
  const HISTORY = 50;
  const MAX_SEEN_DMS = 1000;

  // ---------------------------------------------------------------- state

  const S = {
    nick: "", password: "", token: "", epoch: "",
    login: false, doorReady: false, wantHello: false, helloSent: false,
    ws: null, connected: false, backoff: 500, heard: 0, timeout: 15,
    rid: 0, replies: new Map(),
    rooms: new Map(),          // name -> room
    dms: new Map(),            // nick key -> dm window
    current: null,             // {kind: "room"|"dm", name}
    outbox: [],                // {id, kind: "say"|"tell", target, text, action}
    pendingEls: new Map(),     // message id -> its "unsent" line
    seenDms: [], away: false, awayText: "", nickRetries: 0, helloId: "",
  };

  function save() {
    const keep = {
      nick: S.nick, token: S.token, epoch: S.epoch,
      rooms: [...S.rooms.keys()], dms: [...S.dms.values()].map((d) => d.nick),
      current: S.current, outbox: S.outbox, seenDms: S.seenDms.slice(-MAX_SEEN_DMS),
    };
    try { sessionStorage.setItem(STORE_KEY, JSON.stringify(keep)); } catch (e) { /* full or off */ }
  }

  function restore() {
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null"); } catch (e) { saved = null; }
    if (!saved || typeof saved !== "object" || !saved.nick) return false;
    S.nick = String(saved.nick); S.token = String(saved.token || ""); S.epoch = String(saved.epoch || "");
    for (const name of saved.rooms || []) room(String(name));
    for (const nick of saved.dms || []) dm(String(nick));
    S.outbox = Array.isArray(saved.outbox) ? saved.outbox.filter((o) => o && o.id && o.text) : [];
    S.seenDms = Array.isArray(saved.seenDms) ? saved.seenDms.map(String) : [];
    const cur = saved.current;
    if (cur && (cur.kind === "room" ? S.rooms.has(cur.name) : S.dms.has(String(cur.name).toLowerCase()))) {
      S.current = { kind: cur.kind, name: String(cur.name) };
    }
    return true;
  }

  function newId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ------------------------------------------------------------------ DOM

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function stamp(ts) {
    const d = new Date(ts * 1000);
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return hm;
    const opts = { day: "numeric", month: "short" };
    if (d.getFullYear() !== today.getFullYear()) opts.year = "numeric";
    return d.toLocaleDateString([], opts) + " " + hm;
  }

  function makePane(key) {
    const pane = el("div", "pane hidden");
    pane.dataset.key = key;
    const older = el("div", "older", "");
    const log = el("div", "log");
    const pending = el("div", "pending-box");
    pane.append(older, log, pending);
    $("panes").append(pane);
    return { pane, older, log, pending };
  }

  function atBottom(pane) { return pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40; }
  function stick(w, was) { if (was) w.pane.scrollTop = w.pane.scrollHeight; }

  function mentions(text) {
    if (!S.nick) return false;
    const esc = S.nick.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
    return new RegExp("(^|[^A-Za-z0-9_])" + esc + "($|[^A-Za-z0-9_.-]|[.-]($|[^A-Za-z0-9_]))", "i").test(text);
  }

  function line(cls, ts, who, text) {
    const row = el("div", "line " + cls);
    row.append(el("span", "ts", ts ? stamp(ts) : ""));
    if (who !== null) row.append(el("span", "who", who));
    row.append(el("span", "text", text));
    return row;
  }

  function eventLine(ev) {
    let row;
    switch (ev.kind) {
      case "msg": row = line("msg", ev.ts, "<" + ev.nick + ">", ev.text); break;
      case "action": row = line("action", ev.ts, "* " + ev.nick, ev.text); break;
      case "join": row = line("join", ev.ts, null, "-- " + ev.nick + " joined #" + ev.room); break;
      case "leave": row = line("leave", ev.ts, null, "-- " + ev.nick + " left #" + ev.room + " (" + ev.text + ")"); break;
      case "kick": row = line("kick", ev.ts, null, "-- " + ev.nick + " was removed from #" + ev.room + " " + ev.text); break;
      case "nick": row = line("nick", ev.ts, null, "-- " + ev.nick + " is now " + ev.text); break;
      case "topic": row = line("topic", ev.ts, null, "-- " + ev.nick + (ev.text ? " set the topic: " + ev.text : " cleared the topic")); break;
      default: row = line("notice", ev.ts, null, "-- " + ev.kind);
    }
    row.dataset.seq = String(ev.seq);
    row.dataset.id = ev.id;
    if ((ev.kind === "msg" || ev.kind === "action") && ev.nick.toLowerCase() !== S.nick.toLowerCase() && mentions(ev.text)) {
      row.classList.add("mention");
    }
    return row;
  }

  function notice(text, cls) {
    const w = currentWindow();
    if (!w) { $("login-error").textContent = text; return; }
    const was = atBottom(w.pane);
    w.log.append(line(cls || "notice", Date.now() / 1000, null, "-- " + text));
    stick(w, was);
  }

  function noticeIn(w, text, cls) {
    const was = atBottom(w.pane);
    w.log.append(line(cls || "notice", Date.now() / 1000, null, "-- " + text));
    stick(w, was);
  }

  // --------------------------------------------------------------- windows

  function room(name) {
    let r = S.rooms.get(name);
    if (r) return r;
    r = Object.assign(makePane("#" + name), {
      kind: "room", name, pos: 0, oldest: 0, ready: false, buffer: new Map(), fetching: false,
      loadingOld: false, topic: "", members: new Map(), unread: 0, mentioned: false, priv: false,
      wantPrivate: false,
    });
    r.pane.addEventListener("scroll", () => { if (r.pane.scrollTop < 30) older(r); });
    S.rooms.set(name, r);
    drawLists();
    return r;
  }

  function dm(nick) {
    const key = nick.toLowerCase();
    let d = S.dms.get(key);
    if (d) return d;
    d = Object.assign(makePane("@" + key), { kind: "dm", nick, name: nick, unread: 0, mentioned: false });
    d.older.textContent = "direct messages with " + nick + " (only the two of you see them)";
    S.dms.set(key, d);
    drawLists();
    return d;
  }

  function currentWindow() {
    if (!S.current) return null;
    return S.current.kind === "room" ? S.rooms.get(S.current.name) : S.dms.get(S.current.name.toLowerCase());
  }

  function show(kind, name) {
    S.current = { kind, name };
    for (const w of [...S.rooms.values(), ...S.dms.values()]) w.pane.classList.add("hidden");
    const w = currentWindow();
    if (!w) return;
    w.pane.classList.remove("hidden");
    w.unread = 0; w.mentioned = false;
    w.pane.scrollTop = w.pane.scrollHeight;
    $("title").textContent = kind === "room" ? "#" + name : "@" + w.nick;
    $("topic").textContent = kind === "room" ? w.topic : "";
    $("app").classList.remove("show-side", "show-members");
    drawLists(); drawMembers(); save();
    $("input").focus();
  }

  function drawLists() {
    const list = (ul, windows, kind, label) => {
      ul.replaceChildren();
      for (const w of windows) {
        const li = el("li", S.current && S.current.kind === kind && S.current.name === w.name ? "current" : "");
        li.dataset[kind] = w.name;
        li.append(el("span", "name", label(w)));
        if (w.unread) li.append(el("span", "unread" + (w.mentioned ? " mentioned" : ""), String(w.unread)));
        li.addEventListener("click", () => show(kind, w.name));
        ul.append(li);
      }
    };
    list($("rooms"), [...S.rooms.values()].sort((a, b) => a.name.localeCompare(b.name)), "room", (w) => "#" + w.name);
    list($("dms"), [...S.dms.values()], "dm", (w) => w.nick);
    $("me").textContent = S.nick + (S.away ? " (away)" : "");
    const total = unreadTotal();
    document.title = total ? "(" + total + ") zchat" : "zchat";
    $("unread-all").textContent = total ? String(total) : "";
  }

  function unreadTotal() {
    let n = 0;
    for (const w of [...S.rooms.values(), ...S.dms.values()]) n += w.unread;
    return n;
  }

  function drawMembers() {
    const ul = $("members");
    ul.replaceChildren();
    const w = currentWindow();
    if (!w || w.kind !== "room") return;
    const names = [...w.members.values()].sort((a, b) => a.nick.toLowerCase().localeCompare(b.nick.toLowerCase()));
    for (const mbr of names) {
      const li = el("li", mbr.away ? "away" : "", mbr.nick);
      li.dataset.member = mbr.nick;
      li.title = mbr.away ? "away" : "here";
      ul.append(li);
    }
  }

  function setStatus(state, text) {
    const s = $("status");
    s.dataset.state = state;
    const unsent = S.outbox.length;
    s.textContent = text + (unsent ? " (" + unsent + " unsent)" : "");
  }

  // ------------------------------------------------------------- the wire

  function send(type, fields, onReply) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    const rid = ++S.rid;
    if (onReply) S.replies.set(rid, onReply);
    S.ws.send(JSON.stringify(Object.assign({ type, rid }, fields)));
    return true;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws");
    S.ws = ws; S.doorReady = false; S.helloSent = false;
    setStatus(S.token ? "reconnecting" : "connecting", S.token ? "reconnecting" : "connecting");
    ws.onmessage = (e) => { if (ws === S.ws) receive(e.data); };
    ws.onclose = () => { if (ws === S.ws) lost(); };
  }

  function lost() {
    S.ws = null; S.connected = false; S.replies.clear();
    for (const r of S.rooms.values()) { r.fetching = false; r.loadingOld = false; }
    const wait = S.backoff;
    S.backoff = Math.min(S.backoff * 2, 5000);
    setStatus("reconnecting", "reconnecting");
    setTimeout(connect, wait);
  }

  function receive(data) {
    let msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    if (!msg || typeof msg !== "object") return;
    S.heard = Date.now();
    if (msg.rid !== undefined && msg.rid !== null && S.replies.has(msg.rid)) {
      const handler = S.replies.get(msg.rid);
      S.replies.delete(msg.rid);
      handler(msg);
      return;
    }
    switch (msg.type) {
      case "door": S.login = !!msg.login; S.doorReady = true; doorReady(); break;
      case "event": onEvent(msg); break;
      case "dm": onDm(msg); break;
      case "invited": notice(msg.by + " invited you into #" + msg.room + ": /join " + msg.room); break;
      case "pong": onHeads(msg.heads || []); break;
      case "shutdown": notice("the broker is going away (" + msg.reason + "); reconnecting"); if (S.ws) S.ws.close(); break;
      case "error": if (msg.rid === null) notice("door: " + msg.text, "error"); break;
      default: break;
    }
  }

  function doorReady() {
    $("password-row").classList.toggle("hidden", !S.login);
    $("nick-label").textContent = S.login ? "Account" : "Nick";
    if (S.wantHello && (!S.login || S.password)) hello();
    else showLogin("");
  }

  function showLogin(err) {
    $("app").classList.add("hidden");
    $("login").classList.remove("hidden");
    $("login-error").textContent = err;
    if (S.nick) $("nick").value = S.nick;
  }

  function hello() {
    if (!S.doorReady || S.helloSent) return;
    S.helloSent = true;
    if (!S.helloId) S.helloId = newId(); // the same on every try until a welcome (§6.1)
    const fields = { nick: S.nick, resume: S.token, id: S.helloId };
    if (S.login) fields.password = S.password;
    send("hello", fields, onWelcome);
  }

  function onWelcome(msg) {
    if (msg.type === "error") {
      S.helloSent = false;
      if (msg.code === "nick_taken" && S.token && S.nickRetries < 10) {
        // Our own old session may still hold the nick until the broker times it out.
        S.nickRetries++;
        setStatus("reconnecting", "waiting for the nick " + S.nick);
        setTimeout(() => { if (S.ws && !S.connected) hello(); }, 1500);
        return;
      }
      S.token = ""; S.wantHello = false;
      if (msg.code === "bad_login") S.password = "";
      save();
      showLogin(msg.text);
      return;
    }
    S.connected = true; S.backoff = 500; S.nickRetries = 0; S.helloId = "";
    S.nick = msg.nick; S.token = msg.session; S.timeout = msg.timeout || 15;
    if (S.epoch && msg.epoch !== S.epoch) {
      for (const r of S.rooms.values()) { r.pos = 0; r.oldest = 0; r.log.replaceChildren(); r.ready = false; }
      notice("the broker's history was reset");
    }
    S.epoch = msg.epoch;
    $("login").classList.add("hidden");
    $("app").classList.remove("hidden");
    setStatus("connected", "connected");
    for (const r of S.rooms.values()) join(r, r.pos ? 0 : HISTORY, r.pos > 0);
    if (S.away) send("away", { text: S.awayText });
    if (!S.current && S.rooms.size) show("room", S.rooms.keys().next().value);
    else if (S.current) show(S.current.kind, S.current.name);
    flushOutbox();
    drawLists(); save();
  }

  // ---------------------------------------------------------------- rooms

  function join(r, history, rejoin) {
    send("join", { room: r.name, history, private: r.wantPrivate, rejoin: !!rejoin }, (msg) => {
      if (msg.type === "error") {
        noticeIn(r, "cannot join #" + r.name + ": " + msg.text, "error");
        if (!r.pos) forget(r);
        return;
      }
      r.topic = msg.topic; r.priv = msg.private;
      r.members = new Map(msg.members.map((n) => [n.toLowerCase(), { nick: n, away: false }]));
      const first = !r.ready && r.pos === 0;
      r.ready = true;
      if (first) {
        const was = true;
        r.log.replaceChildren(); // a room joined again after a kick starts afresh
        for (const ev of msg.history) r.log.append(eventLine(ev));
        r.pos = msg.last;
        r.oldest = msg.history.length ? msg.history[0].seq : msg.last + 1;
        r.older.textContent = r.oldest > 1 ? "scroll up for older messages" : "the beginning of #" + r.name;
        stick(r, was);
      } else if (msg.last < r.pos) {
        noticeIn(r, "the broker's history of #" + r.name + " is shorter than what was shown; continuing from there");
        r.pos = msg.last;
      }
      presence(r);
      for (const [seq] of r.buffer) if (seq <= r.pos) r.buffer.delete(seq);
      drain(r, true);
      if (msg.last > r.pos) gap(r, msg.last);
      if (S.current && S.current.kind === "room" && S.current.name === r.name) {
        $("topic").textContent = r.topic; drawMembers();
        stick(r, true);
      }
    });
  }

  function presence(r) {
    // Who is away: NAMES.away (docs/protocol.md §6.13).
    send("who", { room: r.name }, (msg) => {
      if (msg.type === "error" || !Array.isArray(msg.members)) return;
      const away = new Set((msg.away || []).map((n) => n.toLowerCase()));
      r.members = new Map(msg.members.map((n) => [n.toLowerCase(), { nick: n, away: away.has(n.toLowerCase()) }]));
      if (S.current && S.current.kind === "room" && S.current.name === r.name) drawMembers();
    });
  }

  function forget(r) {
    r.pane.remove();
    S.rooms.delete(r.name);
    if (S.current && S.current.kind === "room" && S.current.name === r.name) {
      S.current = null;
      const next = S.rooms.keys().next();
      if (!next.done) show("room", next.value);
    }
    drawLists(); drawMembers(); save();
  }

  function onEvent(ev) {
    const r = S.rooms.get(ev.room);
    if (!r || (!r.ready && r.pos === 0)) return; // JOINED brings everything up to its `last`
    if (ev.seq <= r.pos) return;
    r.buffer.set(ev.seq, ev);
    drain(r, true);
    if (r.buffer.size) gap(r, Math.max(...r.buffer.keys()));
  }

  function drain(r, live) {
    const was = atBottom(r.pane);
    while (r.buffer.has(r.pos + 1)) {
      const ev = r.buffer.get(r.pos + 1);
      r.buffer.delete(r.pos + 1);
      r.pos = ev.seq;
      shown(r, ev, live);
    }
    stick(r, was);
  }

  function shown(r, ev, live) {
    const row = eventLine(ev);
    r.log.append(row);
    if (ev.id && S.pendingEls.has(ev.id)) { S.pendingEls.get(ev.id).remove(); S.pendingEls.delete(ev.id); }
    const key = ev.nick.toLowerCase();
    switch (ev.kind) {
      case "join": r.members.set(key, { nick: ev.nick, away: false }); break;
      case "leave": case "kick":
        r.members.delete(key);
        if (key === S.nick.toLowerCase() && ev.kind === "kick") {
          noticeIn(r, "you were removed from #" + r.name + " " + ev.text + "; /join " + r.name + " to come back", "error");
          r.ready = false; r.pos = 0;
        }
        break;
      case "nick": {
        const mbr = r.members.get(key);
        r.members.delete(key);
        r.members.set(ev.text.toLowerCase(), { nick: ev.text, away: mbr ? mbr.away : false });
        if (key === S.nick.toLowerCase()) { S.nick = ev.text; save(); }
        break;
      }
      case "topic": r.topic = ev.text; break;
      case "action": case "msg": {
        const mbr = r.members.get(key);
        if (mbr && ev.kind === "action") {
          if (/^is away\b/.test(ev.text)) mbr.away = true;
          else if (ev.text === "is back") mbr.away = false;
        }
        if (!live || key === S.nick.toLowerCase()) break;
        const isCurrent = S.current && S.current.kind === "room" && S.current.name === r.name;
        const mentioned = row.classList.contains("mention");
        if (!isCurrent) { r.unread++; if (mentioned) r.mentioned = true; }
        if (mentioned && (!isCurrent || document.hidden)) notify("#" + r.name, ev.nick + ": " + ev.text);
        break;
      }
      default: break;
    }
    if (S.current && S.current.kind === "room" && S.current.name === r.name) {
      if (ev.kind === "topic") $("topic").textContent = r.topic;
      if (ev.kind !== "msg") drawMembers();
    }
    drawLists();
  }

  function gap(r, upto) {
    if (r.fetching || upto <= r.pos) return;
    r.fetching = true;
    const after = r.pos;
    const sent = send("history", { room: r.name, after, limit: Math.min(500, upto - after) }, (msg) => {
      r.fetching = false;
      if (msg.type === "error") return;
      if (r.pos !== after) { if (msg.last > r.pos) gap(r, msg.last); return; }
      const first = msg.events.length ? msg.events[0].seq : msg.last + 1;
      if (first > r.pos + 1 && msg.last > r.pos) {
        noticeIn(r, (first - r.pos - 1) + " older event(s) are no longer in history");
        r.pos = first - 1;
      }
      for (const ev of msg.events) if (ev.seq > r.pos) r.buffer.set(ev.seq, ev);
      drain(r, true);
      const top = Math.max(msg.last, ...r.buffer.keys());
      if (top > r.pos) gap(r, top);
    });
    if (!sent) r.fetching = false;
  }

  function older(r) {
    if (r.loadingOld || !r.ready || r.oldest <= 1) return;
    r.loadingOld = true;
    r.older.textContent = "loading older messages...";
    const sent = send("history", { room: r.name, before: r.oldest, limit: HISTORY }, (msg) => {
      r.loadingOld = false;
      if (msg.type === "error") return;
      const events = msg.events.filter((e) => e.seq < r.oldest);
      const height = r.pane.scrollHeight;
      const rows = events.map(eventLine);
      r.log.prepend(...rows);
      r.oldest = events.length ? events[0].seq : 1;
      r.older.textContent = r.oldest > 1 ? "scroll up for older messages" : "the beginning of #" + r.name;
      r.pane.scrollTop += r.pane.scrollHeight - height; // keep what the reader was looking at
    });
    if (!sent) r.loadingOld = false;
  }

  function onHeads(heads) {
    for (const h of heads) {
      const r = S.rooms.get(h.room);
      if (r && r.ready && h.last > r.pos) gap(r, h.last);
    }
  }

  // ------------------------------------------------------------------ DMs

  function onDm(msg) {
    if (msg.seq) send("seen", { seq: msg.seq });
    if (S.seenDms.includes(msg.id)) return;
    S.seenDms.push(msg.id);
    if (S.seenDms.length > MAX_SEEN_DMS) S.seenDms.shift();
    const d = dm(msg.sender);
    const was = atBottom(d.pane);
    d.log.append(msg.action ? line("action", msg.ts, "* " + msg.sender, msg.text)
                            : line("msg", msg.ts, "<" + msg.sender + ">", msg.text));
    stick(d, was);
    const isCurrent = S.current && S.current.kind === "dm" && S.current.name.toLowerCase() === d.nick.toLowerCase();
    if (!isCurrent) d.unread++;
    if (!isCurrent || document.hidden) notify(msg.sender + " (direct)", msg.text);
    drawLists(); save();
  }

  function notify(title, body) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try { new Notification(title, { body }); } catch (e) { /* not allowed here */ }
  }

  // ---------------------------------------------------------------- outbox

  function queue(kind, target, text, action) {
    const item = { id: newId(), kind, target, text, action: !!action };
    S.outbox.push(item);
    pendingLine(item);
    save();
    sendItem(item);
    setStatus(S.connected ? "connected" : "reconnecting", S.connected ? "connected" : "reconnecting");
  }

  function pendingLine(item) {
    const w = item.kind === "say" ? room(item.target) : dm(item.target);
    const row = line("pending", Date.now() / 1000, item.action ? "* " + S.nick : "<" + S.nick + ">", item.text);
    row.dataset.id = item.id;
    w.pending.append(row);
    S.pendingEls.set(item.id, row);
    w.pane.scrollTop = w.pane.scrollHeight;
  }

  function flushOutbox() {
    for (const item of S.outbox) {
      if (!S.pendingEls.has(item.id)) pendingLine(item);
      sendItem(item);
    }
  }

  function sendItem(item) {
    if (!S.connected) return;
    const fields = item.kind === "say" ? { room: item.target } : { to: item.target };
    Object.assign(fields, { id: item.id, text: item.text, action: item.action });
    send(item.kind, fields, (msg) => {
      if (msg.type === "error" && msg.retry_after > 0) {
        // Held by the door already past its bound: wait and send it again ourselves.
        setTimeout(() => { if (S.outbox.includes(item)) sendItem(item); }, msg.retry_after * 1000);
        return;
      }
      S.outbox = S.outbox.filter((o) => o.id !== item.id);
      save();
      setStatus("connected", "connected");
      const row = S.pendingEls.get(item.id);
      if (msg.type === "error") {
        if (row) { row.classList.remove("pending"); row.classList.add("failed"); row.title = msg.text; }
        S.pendingEls.delete(item.id);
        notice("not sent: " + msg.text, "error");
        return;
      }
      if (item.kind === "tell") {
        if (row) { row.remove(); S.pendingEls.delete(item.id); }
        if (msg.away) noticeIn(dm(item.target), item.target + " is away: " + msg.away);
        const d = dm(item.target);
        const was = atBottom(d.pane);
        d.log.append(item.action ? line("action", Date.now() / 1000, "* " + S.nick, item.text)
                                 : line("msg", Date.now() / 1000, "<" + S.nick + ">", item.text));
        stick(d, was);
      } else {
        const r = S.rooms.get(item.target);
        if (r && r.ready && msg.seq > r.pos) gap(r, msg.seq);
        if (r && msg.seq <= r.pos && row) { row.remove(); S.pendingEls.delete(item.id); }
      }
    });
  }

  // -------------------------------------------------------------- commands

  const HELP = {
    join: "/join ROOM - join ROOM (created if new) and make it current",
    leave: "/leave [ROOM] - leave ROOM (default: the current room)",
    switch: "/switch ROOM - make ROOM (joined already) the current room",
    msg: "/msg NICK TEXT - send a direct message to NICK",
    query: "/query [NICK] - open a direct conversation with NICK (no NICK: back to a room)",
    me: "/me ACTION - say an action in the current room (* nick waves)",
    nick: "/nick NAME - change your nick",
    who: "/who [ROOM] - list the members of ROOM",
    names: "/names [ROOM] - who is in ROOM (same as /who)",
    rooms: "/rooms - list rooms with member counts and topics",
    topic: "/topic [TEXT] - show or set the current room's topic",
    away: "/away [MESSAGE] - mark yourself away and tell the room; /away again when back",
    history: "/history [N] - show the last N messages of the current room",
    clear: "/clear - clear the current window",
    private: "/private ROOM - create (or join) an invite-only room",
    invite: "/invite NICK - let NICK into the current (private) room; operators only",
    kick: "/kick NICK [REASON] - remove NICK from the current room; operators only",
    ban: "/ban NICK - keep NICK out of the current room; operators only",
    unban: "/unban NICK - lift a ban in the current room; operators only",
    op: "/op NICK - make NICK an operator of the current room; operators only",
    deop: "/deop NICK - take NICK's operator rights in the current room; operators only",
    whois: "/whois NICK - what the broker knows of NICK (online, rooms, away, idle)",
    search: "/search WORDS - the current room's messages holding every word",
    help: "/help [COMMAND] - this list, or one command's help",
    quit: "/quit [REASON] - leave the chat",
  };

  function roomName(text) { return text.replace(/^#/, "").toLowerCase(); }

  function currentRoom() {
    const w = currentWindow();
    return w && w.kind === "room" ? w : null;
  }

  function replyNotice(what) {
    return (msg) => { if (msg.type === "error") notice(what + ": " + msg.text, "error"); };
  }

  function typed(textIn) {
    const text = textIn.replace(/\s+$/, "");
    if (!text.trim()) return;
    if (text.startsWith("/") && !text.startsWith("//")) { command(text); return; }
    const body = text.startsWith("//") ? text.slice(1) : text;
    const w = currentWindow();
    if (!w) { notice("join a room first: /join ROOM", "error"); return; }
    queue(w.kind === "room" ? "say" : "tell", w.kind === "room" ? w.name : w.nick, body, false);
  }

  function command(text) {
    const [head, ...restParts] = text.slice(1).split(/\s+/);
    const rest = text.slice(1 + head.length).trim();
    const arg = restParts[0] || "";
    const cmd = head.toLowerCase();
    const r = currentRoom();
    const needRoom = () => { if (!r) notice("this works in a room; /join ROOM first", "error"); return r; };
    switch (cmd) {
      case "join": case "private": {
        if (!arg) { notice(HELP[cmd], "error"); return; }
        const name = roomName(arg);
        const nr = room(name);
        nr.wantPrivate = cmd === "private";
        show("room", name);
        if (!nr.ready) join(nr, HISTORY);
        break;
      }
      case "leave": {
        const lr = arg ? S.rooms.get(roomName(arg)) : r;
        if (!lr) { notice("not in that room", "error"); return; }
        send("leave", { room: lr.name }, (msg) => { if (msg.type === "error") notice(msg.text, "error"); });
        forget(lr);
        break;
      }
      case "switch": {
        const name = roomName(arg);
        if (S.rooms.has(name)) show("room", name);
        else if (S.dms.has(arg.toLowerCase())) show("dm", S.dms.get(arg.toLowerCase()).nick);
        else notice("not in " + arg + "; /join it first", "error");
        break;
      }
      case "msg": {
        const body = rest.slice(arg.length).trim();
        if (!arg || !body) { notice(HELP.msg, "error"); return; }
        dm(arg);
        queue("tell", arg, body, false);
        break;
      }
      case "query": {
        if (!arg) { const first = S.rooms.keys().next(); if (!first.done) show("room", first.value); return; }
        show("dm", dm(arg).nick);
        break;
      }
      case "me": {
        const w = currentWindow();
        if (!rest || !w) { notice(HELP.me, "error"); return; }
        queue(w.kind === "room" ? "say" : "tell", w.kind === "room" ? w.name : w.nick, rest, true);
        break;
      }
      case "nick":
        if (!arg) { notice(HELP.nick, "error"); return; }
        send("nick", { nick: arg }, (msg) => {
          if (msg.type === "error") notice("nick: " + msg.text, "error");
          else { S.nick = arg; drawLists(); save(); notice("you are now " + arg); }
        });
        break;
      case "who": case "names": {
        const name = arg ? roomName(arg) : r && r.name;
        if (!name) { needRoom(); return; }
        send("who", { room: name }, (msg) => {
          if (msg.type === "error") notice(msg.text, "error");
          else notice("#" + msg.room + ": " + msg.members.join(", ") + (msg.more ? " and " + msg.more + " more" : ""));
        });
        break;
      }
      case "rooms":
        send("rooms", {}, (msg) => {
          if (msg.type === "error") { notice(msg.text, "error"); return; }
          if (!msg.rooms.length) notice("no rooms with members");
          for (const ri of msg.rooms) notice("#" + ri.name + " (" + ri.members + ")" + (ri.topic ? ": " + ri.topic : ""));
        });
        break;
      case "topic":
        if (!needRoom()) return;
        send("topic", rest ? { room: r.name, topic: rest } : { room: r.name }, (msg) => {
          if (msg.type === "error") notice("topic: " + msg.text, "error");
          else if (!rest) notice(msg.topic ? "topic of #" + msg.room + ": " + msg.topic : "#" + msg.room + " has no topic");
        });
        break;
      case "away": {
        const w = currentWindow();
        let told;
        if (S.away && !rest) { S.away = false; S.awayText = ""; told = "is back"; notice("you are back"); }
        else {
          S.away = true; S.awayText = rest.slice(0, 300) || "away"; told = rest ? "is away: " + rest : "is away";
          notice("you are away; /away again when back");
        }
        send("away", { text: S.away ? S.awayText : "" }, replyNotice("away"));
        drawLists();
        if (w && w.kind === "room") queue("say", w.name, told, true);
        break;
      }
      case "whois":
        if (!arg) { notice(HELP.whois, "error"); return; }
        send("whois", { nick: arg }, (msg) => {
          if (msg.type === "error") { notice("whois: " + msg.text, "error"); return; }
          if (!msg.online) {
            notice(msg.nick + " is offline" + (msg.seen ? ", last seen " + stamp(msg.seen) : ""));
          } else {
            notice(msg.nick + " is online" + (msg.rooms.length ? " in " + msg.rooms.map((x) => "#" + x).join(" ") : "") +
              (msg.away ? ", away: " + msg.away : "") + ", idle " + Math.round(msg.idle) + " s");
          }
          if (msg.key) notice(msg.nick + "'s key: " + msg.key);
        });
        break;
      case "search": {
        if (!needRoom() || !rest) { if (r) notice(HELP.search, "error"); return; }
        send("search", { room: r.name, text: rest, limit: 50 }, (msg) => {
          if (msg.type === "error") { notice("search: " + msg.text, "error"); return; }
          noticeIn(r, msg.events.length + " message(s) of #" + r.name + " with " + rest);
          const was = atBottom(r.pane);
          for (const ev of msg.events) { const row = eventLine(ev); row.classList.add("found"); r.log.append(row); }
          stick(r, was);
        });
        break;
      }
      case "op": case "deop":
        if (!needRoom() || !arg) { if (r) notice(HELP[cmd], "error"); return; }
        send("op", { room: r.name, nick: arg, op: cmd === "op" }, (msg) => {
          notice(msg.type === "error" ? cmd + ": " + msg.text : arg + (cmd === "op" ? " is now an operator of #" : " is no longer an operator of #") + r.name,
            msg.type === "error" ? "error" : "notice");
        });
        break;
      case "history": {
        if (!needRoom()) return;
        const n = Math.max(1, Math.min(500, parseInt(arg || "20", 10) || 20));
        send("history", { room: r.name, limit: n }, (msg) => {
          if (msg.type === "error") { notice(msg.text, "error"); return; }
          noticeIn(r, "last " + msg.events.length + " message(s) of #" + r.name);
          const was = atBottom(r.pane);
          for (const ev of msg.events) r.log.append(eventLine(ev));
          stick(r, was);
        });
        break;
      }
      case "clear": { const w = currentWindow(); if (w) w.log.replaceChildren(); break; }
      case "invite":
        if (!needRoom() || !arg) { if (r) notice(HELP.invite, "error"); return; }
        send("invite", { room: r.name, nick: arg }, (msg) => {
          notice(msg.type === "error" ? "invite: " + msg.text : "invited " + arg + " into #" + r.name, msg.type === "error" ? "error" : "notice");
        });
        break;
      case "kick":
        if (!needRoom() || !arg) { if (r) notice(HELP.kick, "error"); return; }
        send("kick", { room: r.name, nick: arg, reason: rest.slice(arg.length).trim() }, replyNotice("kick"));
        break;
      case "ban": case "unban":
        if (!needRoom() || !arg) { if (r) notice(HELP[cmd], "error"); return; }
        send("ban", { room: r.name, nick: arg, ban: cmd === "ban" }, (msg) => {
          notice(msg.type === "error" ? cmd + ": " + msg.text : (cmd === "ban" ? "banned " : "unbanned ") + arg, msg.type === "error" ? "error" : "notice");
        });
        break;
      case "help":
        if (arg && HELP[arg.replace(/^\//, "")]) notice(HELP[arg.replace(/^\//, "")]);
        else for (const h of Object.values(HELP)) notice(h);
        break;
      case "quit": case "exit":
        send("bye", { reason: rest.slice(0, 300) }, () => {
          S.token = ""; S.wantHello = false; S.helloSent = false; S.connected = false;
          S.rooms.forEach((x) => x.pane.remove()); S.rooms.clear();
          S.dms.forEach((x) => x.pane.remove()); S.dms.clear(); S.current = null; S.outbox = [];
          try { sessionStorage.removeItem(STORE_KEY); } catch (e) { /* off */ }
          showLogin("you left the chat");
        });
        break;
      default:
        notice("unknown command /" + head + "; /help lists them", "error");
    }
  }

  // ----------------------------------------------------------------- start

  function start() {
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      S.nick = $("nick").value.trim();
      S.password = $("password").value;
      const first = roomName($("room").value.trim() || "lobby");
      if (!S.nick) return;
      if (first && !S.rooms.has(first)) room(first);
      if (first) S.current = { kind: "room", name: first };
      S.wantHello = true;
      save();
      if ("Notification" in window && Notification.permission === "default") {
        try { Notification.requestPermission(); } catch (err) { /* ignored */ }
      }
      $("login-error").textContent = "";
      if (!S.ws) connect(); else hello();
    });
    $("say-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const input = $("input");
      const text = input.value;
      input.value = "";
      typed(text);
    });
    $("toggle-rooms").addEventListener("click", () => $("app").classList.toggle("show-side"));
    $("toggle-members").addEventListener("click", () => $("app").classList.toggle("show-members"));
    // A broker that has gone silent (no beat for `timeout`) is treated as lost.
    setInterval(() => {
      if (S.ws && S.connected && Date.now() - S.heard > S.timeout * 1000) S.ws.close();
    }, 1000);
    if (restore()) {
      S.wantHello = true;
      for (const item of S.outbox) pendingLine(item);
      if (S.current) show(S.current.kind, S.current.name);
    }
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
