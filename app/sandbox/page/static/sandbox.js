// The sandbox page: a Slack-like channel over the Slack emulator (see app/sandbox/page/web.py).
// Polls /api/state, renders messages, live streams (tool timeline + text), Block Kit blocks,
// the app's Home tab and modals, and sends what a person does (posts, button clicks, select
// menus, reactions, modal submissions) back.
"use strict";

const POLL_MS = 400;
const EMOJI = {
  hourglass_flowing_sand: "⏳", hourglass: "⌛", arrows_counterclockwise: "🔄", white_check_mark: "✅",
  heavy_check_mark: "✔️", x: "❌", warning: "⚠️", raised_hand: "✋", raising_hand: "🙋", octagonal_sign: "🛑",
  receipt: "🧾", speech_balloon: "💬", money_with_wings: "💸", moneybag: "💰", no_entry: "⛔",
  no_entry_sign: "🚫", rotating_light: "🚨", double_vertical_bar: "⏸️", arrow_forward: "▶️", wave: "👋",
  tada: "🎉", eyes: "👀", thumbsup: "👍", "+1": "👍", thumbsdown: "👎", "-1": "👎", ticket: "🎫",
  information_source: "ℹ️", mag: "🔍", memo: "📝", lock: "🔒", bust_in_silhouette: "👤", books: "📚",
  white_circle: "⚪", large_green_circle: "🟢", red_circle: "🔴", repeat: "🔁", bulb: "💡", link: "🔗",
  gear: "⚙️", hammer_and_wrench: "🛠️", robot_face: "🤖", checkered_flag: "🏁", incoming_envelope: "📨",
  small_blue_diamond: "🔹", small_orange_diamond: "🔸",
};
// Plain glyphs for the page's own chrome: they render without an emoji font.
const TASK_ICON = { pending: "○", in_progress: "◐", complete: "✓", error: "✗" };

const ui = {
  info: null,
  user: "U0001",
  channel: "C0001",
  thread: null,
  users: {},
  inflight: false,
  modalId: null,
  modalHash: null,
  pane: "channel", // or "home": the app's Home tab
  homeHash: null,
  lastState: null,
};

const $ = (id) => document.getElementById(id);

// ---- text formatting (Slack mrkdwn and the markdown of streams / markdown blocks) -------------

function esc(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function unentity(s) {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

function userName(id) {
  const u = ui.users[id];
  return u ? (u.is_bot ? u.name : u.real_name || u.name) : id;
}

function safeUrl(url) {
  return /^(https?:|mailto:)/i.test(url) ? url : "#";
}

function angle(inner) {
  if (inner.startsWith("@")) {
    const [id] = inner.slice(1).split("|");
    return `<span class="mention">@${esc(ui.users[id] ? ui.users[id].name : id)}</span>`;
  }
  if (inner.startsWith("#")) {
    const [id, label] = inner.slice(1).split("|");
    const ch = (ui.info && ui.info.channels || []).find((c) => c.id === id);
    return `<span class="mention">#${esc(label || (ch ? ch.name : id))}</span>`;
  }
  if (inner.startsWith("!")) {
    const [what, label] = inner.slice(1).split("|");
    return `<span class="mention">@${esc(label || what.replace(/^subteam\^/, ""))}</span>`;
  }
  const [url, label] = inner.split("|");
  return `<a href="${esc(safeUrl(url))}" target="_blank" rel="noopener">${esc(unentity(label || url))}</a>`;
}

function inline(text, kind) {
  const held = [];
  const hold = (html) => `\u0000${held.push(html) - 1}\u0000`;
  let s = text;
  s = s.replace(/`([^`\n]+)`/g, (_, code) => hold(`<code>${esc(unentity(code))}</code>`));
  s = s.replace(/<([^<>\s][^<>]*)>/g, (_, inner) => hold(angle(inner)));
  if (kind === "markdown") {
    s = s.replace(/\[([^\]\n]+)\]\(([^)\s]+)\)/g, (_, label, url) =>
      hold(`<a href="${esc(safeUrl(url))}" target="_blank" rel="noopener">${esc(label)}</a>`));
    s = s.replace(/\bhttps?:\/\/[^\s<>()]+[^\s<>().,;:!?'"]/g, (url) =>
      hold(`<a href="${esc(url)}" target="_blank" rel="noopener">${esc(url)}</a>`));
  }
  s = esc(unentity(s));
  s = s.replace(/\*\*([^*\n]+)\*\*/g, "<b>$1</b>");
  if (kind === "markdown") {
    s = s.replace(/(^|[^\w*])\*([^*\n]+)\*(?!\w)/g, "$1<i>$2</i>");
  } else {
    s = s.replace(/(^|[^\w*])\*([^*\n]+)\*(?!\w)/g, "$1<b>$2</b>");
  }
  s = s.replace(/(^|[^\w])_([^_\n]+)_(?!\w)/g, "$1<i>$2</i>");
  s = s.replace(/(^|[^\w~])~([^~\n]+)~(?!\w)/g, "$1<s>$2</s>");
  s = s.replace(/:([a-z0-9_+-]+):/g, (m, name) => EMOJI[name] || m);
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => held[Number(i)]);
}

function lines(text, kind) {
  const out = [];
  let list = null;
  let para = [];
  const flushPara = () => {
    if (para.length) out.push(`<p>${para.join("<br>")}</p>`);
    para = [];
  };
  const flushList = () => {
    if (list) out.push(`<${list.tag}>${list.items.map((i) => `<li>${i}</li>`).join("")}</${list.tag}>`);
    list = null;
  };
  for (const raw of text.split("\n")) {
    const bullet = raw.match(/^\s*(?:[-*•])\s+(.*)$/);
    const numbered = raw.match(/^\s*\d+[.)]\s+(.*)$/);
    const heading = kind === "markdown" && raw.match(/^#{1,6}\s+(.*)$/);
    const quote = raw.match(/^(?:>|&gt;)\s?(.*)$/);
    if (bullet || numbered) {
      flushPara();
      const tag = bullet ? "ul" : "ol";
      if (!list || list.tag !== tag) { flushList(); list = { tag, items: [] }; }
      list.items.push(inline((bullet || numbered)[1], kind));
    } else if (heading) {
      flushPara(); flushList();
      out.push(`<h4>${inline(heading[1], kind)}</h4>`);
    } else if (quote) {
      flushPara(); flushList();
      out.push(`<blockquote>${inline(quote[1], kind)}</blockquote>`);
    } else if (!raw.trim()) {
      flushPara(); flushList();
    } else {
      flushList();
      para.push(inline(raw, kind));
    }
  }
  flushPara(); flushList();
  return out.join("");
}

function fmt(text, kind = "mrkdwn") {
  if (!text) return "";
  const parts = String(text).split("```");
  return parts.map((part, i) => {
    if (i % 2 === 1) return `<pre><code>${esc(unentity(part.replace(/^\n/, "")))}</code></pre>`;
    return lines(part, kind);
  }).join("");
}

function textObj(obj) {
  if (!obj) return "";
  if (typeof obj === "string") return fmt(obj);
  if (obj.type === "plain_text") return esc(obj.text || "").replace(/:([a-z0-9_+-]+):/g, (m, n) => EMOJI[n] || m);
  return fmt(obj.text || "", obj.type === "markdown" ? "markdown" : "mrkdwn");
}

function plain(obj) {
  return obj && typeof obj === "object" ? obj.text || "" : String(obj || "");
}

// ---- Block Kit ---------------------------------------------------------------------------------

function button(el, msg, opts = {}) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `sa-button ${el.style || ""} ${opts.extra || ""}`.trim();
  b.innerHTML = opts.label || textObj(el.text) || esc(el.action_id);
  b.dataset.actionId = el.action_id || "";
  if (opts.value !== undefined) b.dataset.value = opts.value;
  else if (el.value !== undefined) b.dataset.value = el.value;
  b.dataset.ts = msg.ts;
  if (el.url) {
    b.addEventListener("click", () => window.open(safeUrl(el.url), "_blank", "noopener"));
  }
  if (el.action_id) {
    b.addEventListener("click", () => (msg.view ? viewAction(b, msg, el.action_id, {}) : clickButton(b, msg)));
  }
  return b;
}

// A select menu on a view (Home or modal): static options, or the workspace's channels.
function selectNode(el, ctx) {
  const s = document.createElement("select");
  s.className = "sa-select";
  s.dataset.actionId = el.action_id || "";
  const conversations = el.type === "conversations_select";
  let options, current;
  if (conversations) {
    const channels = ui.info.channels.filter((c) => !c.archived || c.id === el.initial_conversation);
    options = [{ value: "", label: plain(el.placeholder) || "Any channel" },
      ...channels.map((c) => ({ value: c.id, label: `# ${c.name}` }))];
    current = el.initial_conversation || "";
  } else {
    options = (el.options || []).map((o) => ({ value: o.value, label: plain(o.text) }));
    current = el.initial_option ? el.initial_option.value : "";
    if (!el.initial_option) options.unshift({ value: "", label: plain(el.placeholder) || "Choose…", disabled: true });
  }
  for (const o of options) s.append(Object.assign(document.createElement("option"), { value: o.value, textContent: o.label, disabled: Boolean(o.disabled) }));
  s.value = current;
  s.addEventListener("change", () => viewAction(s, ctx, el.action_id,
    conversations ? { selected_conversation: s.value || null } : { selected_option: s.value }));
  return s;
}

function elementNode(el, msg) {
  if (el.type === "button") return button(el, msg);
  if (msg.view && (el.type === "static_select" || el.type === "conversations_select")) return selectNode(el, msg);
  if (el.type === "feedback_buttons") {
    const span = document.createElement("span");
    span.className = "feedback";
    const pos = el.positive_button || {}, neg = el.negative_button || {};
    span.append(
      button(el, msg, { label: `👍 ${esc(plain(pos.text) || "Helpful")}`, value: pos.value, extra: "feedback" }),
      button(el, msg, { label: `👎 ${esc(plain(neg.text) || "Not helpful")}`, value: neg.value, extra: "feedback" }),
    );
    return span;
  }
  if (el.type === "icon_button") return button(el, msg, { label: esc(plain(el.text) || el.icon || "•") });
  if (el.type === "mrkdwn" || el.type === "plain_text") {
    const span = document.createElement("span");
    span.innerHTML = textObj(el);
    return span;
  }
  if (el.type === "image") {
    const img = document.createElement("img");
    img.alt = el.alt_text || "";
    img.src = safeUrl(el.image_url || "");
    img.width = 16; img.height = 16;
    return img;
  }
  const span = document.createElement("span");
  span.className = "unsupported";
  span.textContent = `[${el.type} is not shown in the sandbox]`;
  return span;
}

function blockNode(block, msg) {
  const div = document.createElement("div");
  div.className = `block ${block.type}`;
  if (block.block_id) div.dataset.blockId = block.block_id;
  switch (block.type) {
    case "section": {
      div.classList.add("content");
      const text = document.createElement("div");
      text.className = "section-text";
      text.innerHTML = textObj(block.text) + (block.fields || []).map((f) => `<div>${textObj(f)}</div>`).join("");
      div.append(text);
      if (block.accessory) {
        div.classList.add("has-accessory");
        div.append(elementNode(block.accessory, msg));
      }
      break;
    }
    case "markdown":
      div.classList.add("content");
      div.innerHTML = fmt(block.text || "", "markdown");
      break;
    case "header":
      div.innerHTML = textObj(block.text);
      break;
    case "divider":
      return Object.assign(document.createElement("hr"), { className: "block divider" });
    case "context":
    case "actions":
    case "context_actions":
      for (const el of block.elements || []) div.append(elementNode(el, msg));
      break;
    case "rich_text":
      div.classList.add("content");
      div.innerHTML = fmt(msg.text || "");
      break;
    default:
      div.className = "block unsupported";
      div.textContent = `[${block.type} block is not shown in the sandbox]`;
  }
  return div;
}

// ---- messages ----------------------------------------------------------------------------------

function timeOf(ts) {
  const d = new Date(parseFloat(ts) * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function avatar(userId, isBot) {
  const div = document.createElement("div");
  div.className = `avatar${isBot ? " bot" : ""}`;
  const name = userName(userId);
  div.textContent = isBot ? "SA" : (name[0] || "?").toUpperCase();
  if (!isBot) {
    let h = 0;
    for (const c of userId) h = (h * 31 + c.charCodeAt(0)) % 360;
    div.style.background = `hsl(${h}, 45%, 45%)`;
  }
  return div;
}

function streamNode(stream) {
  const frag = document.createDocumentFragment();
  const tasks = Object.values(stream.tasks || {});
  if (tasks.length || stream.plan_title) {
    const tl = document.createElement("div");
    tl.className = "timeline";
    if (stream.plan_title) tl.innerHTML = `<div class="plan-title">${esc(stream.plan_title)}</div>`;
    for (const t of tasks) {
      const row = document.createElement("div");
      row.className = `task status-${t.status}`;
      row.dataset.status = t.status;
      row.innerHTML = `<span class="icon">${TASK_ICON[t.status] || "•"}</span><span class="title">${esc(t.title)}</span>`;
      tl.append(row);
      if (t.output && (t.status === "complete" || t.status === "error")) {
        const out = document.createElement("div");
        out.className = "task-output";
        out.textContent = t.output;
        tl.append(out);
      }
    }
    frag.append(tl);
  }
  const text = document.createElement("div");
  text.className = "content stream-text";
  text.dataset.state = stream.state;
  text.innerHTML = fmt(stream.text || "", "markdown");
  if (stream.state === "streaming") {
    const caret = document.createElement("span");
    caret.className = "caret";
    (text.lastElementChild || text).append(caret);
  }
  frag.append(text);
  return frag;
}

function messageNode(msg, opts) {
  const isBot = Boolean(msg.bot_id);
  const userId = msg.user || msg.bot_id || "";
  const div = document.createElement("div");
  div.className = `msg${opts.ephemeral ? " ephemeral" : ""}${isBot ? " from-bot" : " from-user"}`;
  div.dataset.ts = msg.ts || msg.message_ts || "";
  div.append(avatar(userId, isBot));
  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.innerHTML = `<span class="name">${esc(isBot ? (msg.bot_profile && msg.bot_profile.name) || userName(userId) : userName(userId))}</span>` +
    (isBot ? '<span class="app-tag">APP</span>' : "") +
    `<span class="time">${esc(timeOf(msg.ts || msg.message_ts))}</span>` +
    (opts.ephemeral ? '<span class="only-you">Only visible to you</span>' : "") +
    (msg.stream && msg.stream.state === "streaming" ? '<span class="streaming-tag">streaming…</span>' : "");
  body.append(meta);
  const content = document.createElement("div");
  content.className = "message-content";
  if (msg.stream) content.append(streamNode(msg.stream));
  const blocks = (msg.blocks || []).filter((b) => !(b.type === "rich_text" && msg.stream));
  if (blocks.length) {
    for (const b of blocks) content.append(blockNode(b, msg));
  } else if (!msg.stream) {
    const t = document.createElement("div");
    t.className = "content";
    t.innerHTML = fmt(msg.text || "");
    content.append(t);
  }
  body.append(content);
  if (msg.reactions && msg.reactions.length) {
    const r = document.createElement("div");
    r.className = "reactions";
    r.innerHTML = msg.reactions.map((x) => `<span class="reaction">${EMOJI[x.name] || `:${esc(x.name)}:`} ${x.count}</span>`).join("");
    body.append(r);
  }
  if (opts.inChannel && msg.reply_count) {
    const rep = document.createElement("div");
    rep.className = "replies";
    const a = document.createElement("a");
    a.textContent = `${msg.reply_count} ${msg.reply_count === 1 ? "reply" : "replies"}`;
    a.addEventListener("click", () => openThread(msg.ts));
    rep.append(a);
    if (msg.latest_reply) {
      const last = document.createElement("span");
      last.className = "last";
      last.textContent = `Last reply ${timeOf(msg.latest_reply)}`;
      rep.append(last);
    }
    body.append(rep);
  }
  div.append(body);
  if (!opts.ephemeral) {
    const hover = document.createElement("div");
    hover.className = "hover-actions";
    const react = document.createElement("button");
    react.type = "button";
    react.className = "react-x";
    react.title = "React with :x: (❌ stops the agent working on this ticket)";
    react.textContent = "✕ React :x:";
    react.addEventListener("click", () => addReaction(msg.ts, "x"));
    hover.append(react);
    if (opts.inChannel) {
      const reply = document.createElement("button");
      reply.type = "button";
      reply.textContent = "Reply in thread";
      reply.addEventListener("click", () => openThread(msg.ts));
      hover.append(reply);
    }
    div.append(hover);
  }
  return div;
}

function signature(obj) {
  return JSON.stringify(obj, (k, v) => (k === "age" || k === "chunks" ? undefined : v));
}

function syncList(container, items, emptyHtml) {
  const cache = container._cache || (container._cache = new Map());
  const nearBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 80;
  if (!items.length) {
    cache.clear();
    container.innerHTML = `<div class="empty">${emptyHtml}</div>`;
    return;
  }
  const empty = container.querySelector(".empty");
  if (empty) empty.remove();
  const seen = new Set();
  let prev = null;
  for (const item of items) {
    seen.add(item.key);
    let entry = cache.get(item.key);
    if (!entry || entry.sig !== item.sig) {
      const el = item.render();
      if (entry) entry.el.replaceWith(el);
      entry = { sig: item.sig, el };
      cache.set(item.key, entry);
    }
    const want = prev ? prev.nextSibling : container.firstChild;
    if (want !== entry.el) container.insertBefore(entry.el, want);
    prev = entry.el;
  }
  for (const [key, entry] of cache) {
    if (!seen.has(key)) { entry.el.remove(); cache.delete(key); }
  }
  if (nearBottom || container._stick) {
    container.scrollTop = container.scrollHeight;
    container._stick = false;
  }
}

function withEphemerals(messages, ephemerals, opts) {
  const items = messages.map((m) => ({ key: m.ts, at: parseFloat(m.ts), sig: signature(m), render: () => messageNode(m, opts) }));
  for (const e of ephemerals) {
    const m = { ...e, ts: e.message_ts, user: ui.info.bot.id, bot_id: "B-ephemeral", bot_profile: { name: ui.info.bot.name } };
    items.push({ key: `eph-${e.message_ts}`, at: parseFloat(e.message_ts), sig: signature(m), render: () => messageNode(m, { ...opts, ephemeral: true }) });
  }
  items.sort((a, b) => a.at - b.at);
  return items;
}

// ---- rendering the state -----------------------------------------------------------------------

function render(state) {
  ui.lastState = state;
  const channelEph = state.ephemerals.filter((e) => !e.thread_ts);
  syncList($("channel-messages"), withEphemerals(state.messages, channelEph, { inChannel: true }),
    "No messages yet. Mention <b>@support-agent</b> below to open a ticket.");
  const pane = $("thread-pane");
  if (ui.thread && state.thread && state.thread.ts === ui.thread) {
    pane.hidden = ui.pane !== "channel"; // the thread stays open behind the Home tab
    const eph = state.ephemerals.filter((e) => e.thread_ts === ui.thread);
    syncList($("thread-messages"), withEphemerals(state.thread.messages, eph, { inChannel: false }), "This thread is empty.");
    const status = state.thread.status && state.thread.status.status;
    const line = $("thread-status");
    if (status) {
      line.hidden = false;
      const loading = state.thread.status.loading_messages || [];
      const extra = loading.length ? ` (${esc(loading[Math.floor(Date.now() / 2500) % loading.length])})` : "";
      line.innerHTML = `<b>${esc(ui.info.bot.name)}</b> ${esc(status.replace(/…$/, ""))}<span class="dots"></span>${extra}`;
    } else {
      line.hidden = true;
    }
  } else if (!ui.thread) {
    pane.hidden = true;
  }
  if (ui.pane === "home") renderHome(state.home);
  renderModal(state.modals || []);
}

// What an element on a view needs to act: the view and its block (buttons on the Home share action ids).
function viewContext(viewId, block) {
  return { ts: "", text: "", view: viewId, blockId: block.block_id || null };
}

function renderHome(home) {
  const box = $("home-blocks");
  if (!home || home.user_id !== ui.user) {
    if (ui.homeHash !== "opening") box.innerHTML = '<div class="empty">Opening Home…</div>';
    ui.homeHash = "opening";
    return;
  }
  if (home.hash === ui.homeHash) return;
  ui.homeHash = home.hash;
  box.innerHTML = "";
  for (const block of home.blocks || []) box.append(blockNode(block, viewContext(home.id, block)));
}

function showPane(pane) {
  ui.pane = pane;
  $("channel-pane").hidden = pane !== "channel";
  $("thread-pane").hidden = pane !== "channel" || !ui.thread;
  // Back at the newest messages when the channel shows again.
  $("channel-messages")._stick = $("thread-messages")._stick = true;
  $("home-pane").hidden = pane !== "home";
  $("channel-entry").classList.toggle("active", pane === "channel");
  $("home-entry").classList.toggle("active", pane === "home");
}

// Opening the tab is what makes the app publish it (app_home_opened); the poll then shows it.
async function openHome() {
  showPane("home");
  ui.homeHash = null;
  try {
    await api("/api/home", { user: ui.user });
  } catch (err) {
    toast(`Home failed: ${err.message}`);
  }
  poll();
}

async function poll() {
  if (ui.inflight) return;
  ui.inflight = true;
  try {
    const q = new URLSearchParams({ channel: ui.channel, user: ui.user });
    if (ui.thread) q.set("thread", ui.thread);
    if (ui.pane === "home") q.set("home", "1");
    const res = await fetch(`/api/state?${q}`, { cache: "no-store" });
    if (res.ok) render(await res.json());
  } catch (err) {
    // the sandbox stopped: keep the page, try again
  } finally {
    ui.inflight = false;
  }
}

// ---- actions -----------------------------------------------------------------------------------

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(t._timer);
  t._timer = setTimeout(() => { t.hidden = true; }, 3500);
}

async function api(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok || data.ok === false) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

function openThread(ts) {
  if (ui.thread !== ts) {
    const list = $("thread-messages");
    list.innerHTML = "";
    list._cache = new Map();
    list._stick = true;
  }
  ui.thread = ts;
  $("thread-pane").hidden = false;
  poll();
}

async function send(text, threadTs) {
  const data = await api("/api/post", { channel: ui.channel, text, user: ui.user, thread_ts: threadTs || null });
  if (!threadTs && data.ts && /@/.test(text)) openThread(data.ts);
  if (threadTs) $("thread-messages")._stick = true;
  else $("channel-messages")._stick = true;
  if (data.command) toast(`${data.command} sent`);
  poll();
}

async function clickButton(b, msg) {
  b.disabled = true;
  try {
    await api("/api/click", { channel: ui.channel, ts: msg.ts, action_id: b.dataset.actionId, value: b.dataset.value, user: ui.user });
    poll();
  } catch (err) {
    toast(`Click failed: ${err.message}`);
  } finally {
    setTimeout(() => { b.disabled = false; }, 1500);
  }
}

async function viewAction(control, ctx, actionId, extra) {
  control.disabled = true;
  try {
    await api("/api/view/action", { view_id: ctx.view, block_id: ctx.blockId, action_id: actionId, user: ui.user, ...extra });
    poll();
  } catch (err) {
    toast(`Action failed: ${err.message}`);
  } finally {
    setTimeout(() => { control.disabled = false; }, 1500);
  }
}

async function addReaction(ts, name) {
  try {
    const data = await api("/api/react", { channel: ui.channel, ts, name, user: ui.user });
    if (data.already) toast("You already reacted with that");
    poll();
  } catch (err) {
    toast(`Reaction failed: ${err.message}`);
  }
}

function renderModal(modals) {
  const box = $("modal");
  const view = modals[0];
  if (!view) {
    if (ui.modalId) { box.hidden = true; box.innerHTML = ""; ui.modalId = null; }
    return;
  }
  if (ui.modalId === view.id && ui.modalHash === view.hash) return;
  // The app updated the open modal (views.update): redraw it, keeping what was typed.
  const typed = ui.modalId === view.id
    ? Object.fromEntries([...box.querySelectorAll("[name]")].map((f) => [f.name, f.value])) : {};
  const fresh = ui.modalId !== view.id;
  ui.modalId = view.id;
  ui.modalHash = view.hash;
  box.innerHTML = "";
  const form = document.createElement("form");
  form.className = "modal";
  form.innerHTML = `<h2>${esc(plain(view.title) || "Modal")}</h2><div class="modal-body"></div><div class="modal-error"></div>` +
    `<footer><button type="button" class="sa-button cancel">${esc(plain(view.close) || "Cancel")}</button>` +
    (view.submit ? `<button type="submit" class="sa-button primary submit">${esc(plain(view.submit))}</button>` : "") + "</footer>";
  const bodyEl = form.querySelector(".modal-body");
  const inputs = [];
  for (const block of view.blocks || []) {
    if (block.type === "input") {
      const el = block.element || {};
      const label = document.createElement("label");
      label.innerHTML = textObj(block.label) + (block.optional ? ' <span class="time">(optional)</span>' : "");
      const field = document.createElement(el.multiline ? "textarea" : "input");
      field.name = `${block.block_id}/${el.action_id}`;
      if (el.max_length) field.maxLength = el.max_length;
      if (el.type !== "plain_text_input") field.disabled = true;
      field.value = typed[field.name] || "";
      label.append(field);
      bodyEl.append(label);
      inputs.push({ block, el, field });
    } else {
      bodyEl.append(blockNode(block, viewContext(view.id, block)));
    }
  }
  const close = async (cancel) => {
    const values = {};
    for (const { block, el, field } of inputs) {
      values[block.block_id] = { [el.action_id]: { type: el.type, value: field.value || null } };
    }
    try {
      const data = await api("/api/view", { view_id: view.id, user: ui.user, values, cancel });
      if (data.errors) {
        form.querySelector(".modal-error").textContent = Object.values(data.errors).join(" ");
        return;
      }
      box.hidden = true;
      box.innerHTML = "";
      poll();
    } catch (err) {
      toast(`Modal failed: ${err.message}`);
    }
  };
  form.querySelector(".cancel").addEventListener("click", () => close(true));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); close(false); });
  box.append(form);
  box.hidden = false;
  const first = form.querySelector("textarea, input");
  if (first && fresh) first.focus();
}

function wireComposer(formId, inputId, threadTs) {
  const form = $(formId), input = $(inputId);
  const submit = async () => {
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    try {
      await send(text, threadTs());
    } catch (err) {
      input.value = text;
      toast(`Not sent: ${err.message}`);
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); submit(); });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); submit(); }
  });
}

function suggestions() {
  const bot = `@${ui.info.bot.name}`;
  const list = ui.info.mode === "demo"
    ? [`${bot} How do refunds work on annual plans?`, `${bot} Please check past tickets about SSO`,
       `${bot} Give me a slow answer`, "/support status", "/support cost"]
    : [`${bot} How do refunds work on annual plans?`, "/support status", "/support cost"];
  const box = $("suggestions");
  box.innerHTML = "";
  for (const text of list) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.addEventListener("click", () => send(text, null).catch((err) => toast(`Not sent: ${err.message}`)));
    box.append(b);
  }
}

// A sidebar entry: click, or Enter / Space with the keyboard.
function onActivate(el, fn) {
  el.addEventListener("click", fn);
  el.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); fn(); }
  });
}

async function init() {
  const info = await (await fetch("/api/info", { cache: "no-store" })).json();
  ui.info = info;
  ui.channel = info.channel;
  for (const u of info.users) ui.users[u.id] = u;
  $("workspace-name").textContent = info.team.name;
  $("bot-name").textContent = info.bot.name;
  const banner = $("banner");
  banner.dataset.mode = info.mode;
  banner.dataset.mcp = info.mcp_available ? "on" : "off";
  $("banner-mode").textContent = info.mode === "demo" ? "Sandbox · demo agent" : "Sandbox · real agent";
  $("banner-agent").textContent = `Slack is emulated on this machine. ${info.agent_note}`;
  $("banner-mcp").textContent = info.mcp_note;
  const ch = info.channels.find((c) => c.id === info.channel);
  $("channel-title").textContent = `# ${ch ? ch.name : info.channel}`;
  $("thread-channel").textContent = `# ${ch ? ch.name : info.channel}`;
  $("channel-input").placeholder = `Message #${ch ? ch.name : ""}: mention @${info.bot.name} to open a ticket`;
  const list = $("channel-list");
  for (const c of info.channels.filter((c) => !c.archived)) {
    const li = document.createElement("li");
    li.textContent = `# ${c.name}`;
    if (c.id === info.channel) {
      Object.assign(li, { id: "channel-entry", className: "active", tabIndex: 0 });
      li.setAttribute("role", "button");
      onActivate(li, () => showPane("channel"));
    } else { li.className = "muted"; li.title = "The bot is not in this channel"; }
    list.append(li);
  }
  const select = $("user-select");
  for (const u of info.users.filter((u) => !u.is_bot)) {
    const opt = document.createElement("option");
    opt.value = u.id;
    opt.textContent = `${u.real_name}${u.staff ? " (staff)" : ""}`;
    select.append(opt);
  }
  select.value = ui.user;
  select.addEventListener("change", () => {
    ui.user = select.value;
    ui.modalId = null;
    if (ui.pane === "home") openHome(); // the new user opens their own Home
    else poll();
  });
  $("home-title").textContent = info.bot.name;
  onActivate($("home-entry"), openHome);
  $("thread-close").addEventListener("click", () => { ui.thread = null; $("thread-pane").hidden = true; });
  wireComposer("channel-composer", "channel-input", () => null);
  wireComposer("thread-composer", "thread-input", () => ui.thread);
  suggestions();
  document.body.dataset.ready = "1";
  poll();
  setInterval(poll, POLL_MS);
}

init();
