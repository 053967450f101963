// The memory service's MCP Apps view: JSON-RPC 2.0 over postMessage with the host (SEP-1865).
// Every memory field is put on the page as text (textContent), never parsed as markup.
"use strict";
(function () {
  var PROTOCOL_VERSION = "2026-01-26";
  var MAX_ITEMS = 100;
  var view = document.getElementById("view");
  var pending = new Map();
  var nextId = 1;
  var host = { context: {}, capabilities: {} };
  var toolName = null;

  function send(message) { window.parent.postMessage(Object.assign({ jsonrpc: "2.0" }, message), "*"); }
  function notify(method, params) { send({ method: method, params: params || {} }); }
  function request(method, params) {
    var id = nextId++;
    send({ id: id, method: method, params: params || {} });
    return new Promise(function (resolve, reject) { pending.set(id, { resolve: resolve, reject: reject }); });
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function str(value, max) { return typeof value === "string" ? value.slice(0, max || 100000) : ""; }

  function webUrl(value) {
    try {
      var url = new URL(str(value, 2048));
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (e) { return null; }
  }

  function when(iso) {
    var text = str(iso, 64);
    var date = new Date(text);
    var node = el("time", null, text);
    if (!text || isNaN(date.getTime())) return node;
    node.dateTime = text;
    try {
      node.textContent = new Intl.DateTimeFormat(str(host.context.locale, 35) || undefined, {
        dateStyle: "medium", timeStyle: text.length > 10 ? "short" : undefined,
        timeZone: str(host.context.timeZone, 64) || undefined,
      }).format(date);
    } catch (e) { node.textContent = text; }
    return node;
  }

  function openLink(event) {
    // Inside a sandboxed frame a plain link may go nowhere: ask the host to open it.
    if (!host.capabilities.openLinks) return;
    event.preventDefault();
    request("ui/open-link", { url: event.currentTarget.href }).catch(function () {});
  }

  function pageLink(memory, label) {
    var href = webUrl(memory.url);
    if (!href) return null;
    var link = el("a", null, label || "Open");
    link.href = href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.setAttribute("aria-label", (label || "Open") + ": " + str(memory.title || memory.text, 60));
    link.addEventListener("click", openLink);
    return link;
  }

  function card(memory) {
    var item = el("li", "card");
    item.setAttribute("data-id", str(memory.id, 64));
    item.appendChild(el("p", "text", str(memory.text || memory.title)));
    var meta = el("div", "meta");
    if (memory.entity) meta.appendChild(el("span", "entity", str(memory.entity, 200)));
    if (memory.memory_type) meta.appendChild(el("span", "type", str(memory.memory_type, 40).replace(/_/g, " ")));
    (Array.isArray(memory.tags) ? memory.tags.slice(0, 32) : []).forEach(function (tag) {
      meta.appendChild(el("span", "tag", str(tag, 100)));
    });
    var dated = memory.occurred_at || memory.created_at;
    if (dated) meta.appendChild(when(dated));
    if (typeof memory.score === "number") {
      var score = el("span", "score", "score " + memory.score.toFixed(2));
      score.title = "How well it matched (higher is better)";
      meta.appendChild(score);
    }
    var link = pageLink(memory);
    if (link) meta.appendChild(link);
    item.appendChild(meta);
    return item;
  }

  function list(title, memories, empty) {
    var section = el("section");
    section.setAttribute("aria-label", title);
    section.appendChild(el("h2", null, title));
    if (!memories.length) { section.appendChild(el("p", "muted", empty)); return section; }
    var ul = el("ul");
    memories.slice(0, MAX_ITEMS).forEach(function (memory) { if (memory && typeof memory === "object") ul.appendChild(card(memory)); });
    section.appendChild(ul);
    return section;
  }

  function stored(memory) {
    var section = el("section");
    section.setAttribute("aria-label", "Stored memory");
    var note = el("div", "stored");
    var status = el("span", "status", memory.deleted ? "Deleted." : "Stored in your memory.");
    status.setAttribute("role", "status");
    note.appendChild(status);
    if (!memory.deleted && str(memory.id, 64)) {
      var undo = el("button", "undo", "Undo");
      undo.type = "button";
      undo.setAttribute("aria-label", "Undo: delete this memory again");
      undo.addEventListener("click", function () {
        undo.disabled = true;
        status.textContent = "Undoing…";
        request("tools/call", { name: "delete_memory", arguments: { id: str(memory.id, 64), reason: "undone in the chat" } })
          .then(function (result) {
            if (result && result.isError) throw new Error(textOf(result) || "the memory service refused");
            status.textContent = "Undone: the memory was deleted.";
            undo.remove();
          })
          .catch(function (error) {
            status.textContent = "Could not undo: " + str(error && error.message, 300);
            status.className = "status error";
            undo.disabled = false;
          });
      });
      note.appendChild(undo);
    }
    section.appendChild(note);
    var ul = el("ul");
    ul.appendChild(card(memory));
    section.appendChild(ul);
    return section;
  }

  function history(page) {
    var section = el("section");
    section.setAttribute("aria-label", "History of a memory");
    section.appendChild(el("h2", null, "History"));
    var entries = Array.isArray(page.entries) ? page.entries.slice(0, MAX_ITEMS) : [];
    if (!entries.length) { section.appendChild(el("p", "muted", "No events.")); return section; }
    var ol = el("ol", "timeline");
    entries.forEach(function (entry) {
      if (!entry || typeof entry !== "object") return;
      var li = el("li");
      li.appendChild(el("span", "event", str(entry.type, 80).replace(/^memor(y|ies)\./, "").replace(/_/g, " ")));
      var meta = el("div", "meta");
      meta.appendChild(when(entry.recorded_at));
      if (entry.client_id) meta.appendChild(el("span", null, "via " + str(entry.client_id, 200)));
      if (entry.redacted) meta.appendChild(el("span", null, "erased"));
      li.appendChild(meta);
      ol.appendChild(li);
    });
    section.appendChild(ol);
    if (page.next_cursor !== null && page.next_cursor !== undefined) section.appendChild(el("p", "muted", "More events follow."));
    return section;
  }

  function textOf(result) {
    var content = Array.isArray(result && result.content) ? result.content : [];
    return content.map(function (c) { return c && c.type === "text" ? str(c.text, 500) : ""; }).join(" ").trim();
  }

  function render(result) {
    var data = result && result.structuredContent;
    var node;
    if (result && result.isError) {
      node = el("p", "error", textOf(result) || "The memory service answered with an error.");
    } else if (!data || typeof data !== "object") {
      node = el("p", "muted", textOf(result) || "Nothing to show.");
    } else if (Array.isArray(data.memories)) {
      node = list("Memories", data.memories, "No memory matches.");
    } else if (Array.isArray(data.results)) {
      node = list("Search results", data.results, "No memory matches.");
    } else if (Array.isArray(data.entries)) {
      node = history(data);
    } else if (typeof data.id === "string" && typeof data.text === "string") {
      node = toolName && toolName !== "store_memory" ? list("Memory", [data], "") : stored(data);
    } else {
      node = el("p", "muted", "Nothing to show.");
    }
    view.replaceChildren(node);
    view.setAttribute("aria-busy", "false");
    reportSize();
  }

  function applyContext(context) {
    if (!context || typeof context !== "object") return;
    host.context = Object.assign({}, host.context, context);
    if (context.theme === "dark" || context.theme === "light") document.documentElement.setAttribute("data-theme", context.theme);
    var variables = context.styles && context.styles.variables;
    if (variables && typeof variables === "object") {
      Object.keys(variables).slice(0, 200).forEach(function (name) {
        var value = variables[name];
        // Colours, sizes and font names only: a host's font CSS (which could load from afar) is not applied.
        if (/^--[a-z0-9-]{1,64}$/.test(name) && typeof value === "string" && value.length <= 200) {
          document.documentElement.style.setProperty(name, value);
        }
      });
    }
    var tool = context.toolInfo && context.toolInfo.tool;
    if (tool && typeof tool.name === "string") toolName = tool.name;
  }

  var lastSize = "";
  function reportSize() {
    var width = Math.ceil(document.documentElement.scrollWidth);
    var height = Math.ceil(document.documentElement.scrollHeight);
    var size = width + "x" + height;
    if (size === lastSize) return;
    lastSize = size;
    notify("ui/notifications/size-changed", { width: width, height: height });
  }

  window.addEventListener("message", function (event) {
    if (event.source !== window.parent) return;
    var message = event.data;
    if (!message || message.jsonrpc !== "2.0") return;
    if (message.method === undefined && pending.has(message.id)) {
      var waiter = pending.get(message.id);
      pending.delete(message.id);
      if (message.error) waiter.reject(new Error(str(message.error.message, 300) || "error"));
      else waiter.resolve(message.result);
      return;
    }
    switch (message.method) {
      case "ui/notifications/tool-result": render(message.params); break;
      case "ui/notifications/host-context-changed": applyContext(message.params); reportSize(); break;
      case "ui/notifications/tool-cancelled":
        view.replaceChildren(el("p", "muted", "Cancelled.")); view.setAttribute("aria-busy", "false"); break;
      case "ui/resource-teardown":
      case "ping":
        if (message.id !== undefined) send({ id: message.id, result: {} });
        break;
      default:
        if (message.id !== undefined && message.method) send({ id: message.id, error: { code: -32601, message: "Method not found" } });
    }
  });

  if (typeof ResizeObserver === "function") new ResizeObserver(reportSize).observe(document.documentElement);

  request("ui/initialize", {
    appCapabilities: { availableDisplayModes: ["inline"] },
    appInfo: { name: "memory-cards", title: "Memory", version: "1.0.0" },
    protocolVersion: PROTOCOL_VERSION,
  }).then(function (result) {
    host.capabilities = (result && result.hostCapabilities) || {};
    applyContext(result && result.hostContext);
    notify("ui/notifications/initialized", {});
    reportSize();
  }).catch(function () {
    view.replaceChildren(el("p", "error", "This host did not start the view."));
  });
})();
