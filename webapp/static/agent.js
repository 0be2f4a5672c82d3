/* The agent console: chats arrive through server-sent events and are drawn from whole snapshots.
   Everything is built with DOM methods (textContent), never from HTML strings. */
(function () {
  "use strict";

  var ROOT = document.body.getAttribute("data-root") || "";  // the path a proxy serves the connector under
  var initial = JSON.parse(document.getElementById("console-initial").textContent);
  var chats = {};            // chat id -> snapshot
  var versions = {};         // chat id -> version of the newest snapshot (or removal) taken
  var selected = initial.selected || null;
  var lastId = initial.last_event_id || 0;
  var seenKey = "crmconnector.seen." + initial.agent.email;
  var seen = loadSeen();
  var source = null;
  var retryDelay = 1000;
  var bannerTimer = null;
  var notices = {};          // chat id -> {text, bad}
  var creating = {};         // chat id -> true while its new record is being created: one create per click

  var listEl = document.getElementById("chat-list");
  var detailEl = document.getElementById("chat-detail");
  var emptyEl = document.getElementById("no-chats");
  var banner = document.getElementById("stream-banner");
  var announcer = document.getElementById("announcer");

  function loadSeen() {
    try { return JSON.parse(window.localStorage.getItem(seenKey) || "{}"); } catch (e) { return {}; }
  }
  function saveSeen() {
    try { window.localStorage.setItem(seenKey, JSON.stringify(seen)); } catch (e) { /* private mode */ }
  }

  function h(tag, attrs) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) { return; }
      if (name === "text") { el.textContent = value; }
      else if (name.slice(0, 2) === "on") { el.addEventListener(name.slice(2), value); }
      else { el.setAttribute(name, value === true ? "" : value); }
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) { continue; }
      el.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return el;
  }

  function time(iso) {
    if (!iso) { return ""; }
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function consumerCount(chat) {
    return chat.messages.filter(function (m) { return m.sender === "consumer"; }).length;
  }
  function unread(chat) {
    return Math.max(0, consumerCount(chat) - (seen[chat.id] || 0));
  }

  function ordered() {
    return Object.keys(chats).map(function (id) { return chats[id]; }).sort(function (a, b) {
      var ka = (a.assigned_at || "9") + (a.created_at || "") + a.id;
      var kb = (b.assigned_at || "9") + (b.created_at || "") + b.id;
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
  }

  var OUTCOME = {single: "1 match", multiple: "several matches", none: "no match", pending: "matching…"};

  function renderList() {
    var list = ordered();
    emptyEl.hidden = list.length > 0;
    listEl.textContent = "";
    list.forEach(function (chat) {
      var count = unread(chat);
      var button = h("button", {type: "button", "class": "chat-item" + (chat.id === selected ? " current" : ""),
                                "data-chat-id": chat.id, "aria-current": chat.id === selected ? "true" : null,
                                onclick: function () { select(chat.id); }},
        h("span", {"class": "number", text: chat.consumer_display || chat.consumer_number || "unknown number"}),
        h("span", {"class": "outcome outcome-" + (chat.match.outcome || "pending"),
                   text: OUTCOME[chat.match.outcome] || "matching…"}),
        chat.ended_at ? h("span", {"class": "ended", text: "ended"}) : null,
        count ? h("span", {"class": "unread", "aria-label": count + " unread", text: String(count)}) : null);
      listEl.appendChild(h("li", {}, button));
    });
  }

  function recordLink(url, label) {
    return url ? h("a", {href: url, target: "_blank", rel: "noopener", "class": "crm-link", text: label}) : null;
  }

  function notice(chatId) {
    var n = notices[chatId];
    return n ? h("p", {"class": n.bad ? "error" : "ok", role: n.bad ? "alert" : "status", text: n.text}) : null;
  }

  // Snapshots reach us by the stream and by request answers, which can overtake each other:
  // take one only if it is at least as new as what we have (a removal counts too).
  function take(chatId, chat, version) {
    version = version || 0;
    if (version < (versions[chatId] || 0)) { return false; }
    versions[chatId] = version;
    if (chat) { chats[chatId] = chat; } else { delete chats[chatId]; }
    return true;
  }

  function post(url, body) {
    return fetch(url, {method: "POST", credentials: "same-origin",
                       headers: {"Content-Type": "application/json", "Accept": "application/json"},
                       body: JSON.stringify(body)})
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) {
            var message = (data.error && data.error.message) || ("request failed (" + response.status + ")");
            throw new Error(message);
          }
          return data;
        });
      });
  }

  function linkTo(chat, objectName, recordId, what) {
    notices[chat.id] = {text: "Linking…", bad: false};
    renderDetail();
    post(ROOT + "/api/agent/chats/" + encodeURIComponent(chat.id) + "/link", {object: objectName, id: recordId})
      .then(function (data) {
        if (data.chat) { take(chat.id, data.chat, data.chat.version); }
        notices[chat.id] = {text: "Linked to " + (what || data.linked_record.name || recordId) + ".", bad: false};
        render();
      })
      .catch(function (err) { notices[chat.id] = {text: "Not linked: " + err.message, bad: true}; renderDetail(); });
  }

  function singleMatch(chat) {
    var r = chat.match.records[0];
    return h("div", {"class": "pop pop-single"},
      h("p", {}, h("span", {"class": "tag", text: r.object}), " ", h("strong", {"class": "record-name", text: r.name}),
        r.phone ? " · " + r.phone : ""),
      recordLink(r.url, "Open in CRM"));
  }

  function multipleMatch(chat) {
    var current = chat.linked ? chat.linked.id : (chat.match.records[0] || {}).id;
    var name = "pick-" + chat.id;
    var fieldset = h("fieldset", {"class": "pop pop-multiple"},
      h("legend", {text: chat.match.records.length + " records match this number: pick the one this chat is about"}));
    chat.match.records.forEach(function (r, i) {
      var id = name + "-" + i;
      fieldset.appendChild(h("div", {"class": "pick"},
        h("input", {type: "radio", name: name, id: id, value: r.object + ":" + r.id, checked: r.id === current}),
        h("label", {"for": id}, h("span", {"class": "tag", text: r.object}), " ", r.name || r.id,
          r.phone ? " · " + r.phone : ""),
        " ", recordLink(r.url, "Open in CRM")));
    });
    fieldset.appendChild(h("button", {type: "button", "class": "link-pick", onclick: function () {
      var checked = fieldset.querySelector("input[type=radio]:checked");
      if (!checked) { return; }
      var parts = checked.value.split(":");
      var picked = chat.match.records.filter(function (r) { return r.id === parts[1]; })[0];
      linkTo(chat, parts[0], parts[1], picked && picked.name);
    }, text: "Link chat to the selected record"}));
    return fieldset;
  }

  function noMatch(chat) {
    var nr = chat.new_record;
    if (!nr) { return null; }
    if (nr.mode !== "form") {
      return h("div", {"class": "pop pop-none"}, h("p", {text: "No record matches this number."}),
        recordLink(nr.url, "Create a new " + nr.object + " in the CRM"));
    }
    var form = h("form", {"class": "record-form pop pop-none", "aria-label": "New " + nr.object});
    nr.fields.forEach(function (f) {
      var id = "new-" + chat.id + "-" + f.name;
      form.appendChild(h("label", {"for": id, text: f.name + (f.required ? " *" : "")}));
      form.appendChild(h("input", {id: id, name: f.name, value: f.value, required: f.required}));
    });
    form.appendChild(h("button", {type: "submit", text: "Create " + nr.object + " and link",
                                  disabled: !!creating[chat.id]}));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (creating[chat.id]) { return; }  // a double click (or Enter twice) must not create two records
      creating[chat.id] = true;
      form.querySelector("button[type=submit]").disabled = true;
      var fields = {};
      nr.fields.forEach(function (f) { fields[f.name] = form.elements[f.name].value; });
      notices[chat.id] = {text: "Creating…", bad: false};
      post(ROOT + "/api/agent/chats/" + encodeURIComponent(chat.id) + "/records", {object: nr.object, fields: fields})
        .then(function (data) {
          delete creating[chat.id];
          if (data.chat) { take(chat.id, data.chat, data.chat.version); }
          notices[chat.id] = {text: nr.object + " created" + (data.linked ? " and linked." : "."), bad: false};
          render();
        })
        .catch(function (err) {
          delete creating[chat.id];
          notices[chat.id] = {text: "Not created: " + err.message, bad: true};
          renderDetail();
        });
    });
    return h("div", {}, h("p", {text: "No record matches this number. Create one:"}), form);
  }

  function linkById(chat) {
    var form = h("form", {"class": "link-by-id", "aria-label": "Link to a record by id"},
      h("label", {"for": "obj-" + chat.id, text: "Object"}),
      h("select", {id: "obj-" + chat.id, name: "object"},
        h("option", {text: "Contact"}), h("option", {text: "Lead"}), h("option", {text: "Account"})),
      h("label", {"for": "rid-" + chat.id, text: "Record id"}),
      h("input", {id: "rid-" + chat.id, name: "id", required: true, maxlength: "18"}),
      h("button", {type: "submit", "class": "secondary", text: "Link"}));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      linkTo(chat, form.elements.object.value, form.elements.id.value.trim());
    });
    return h("details", {}, h("summary", {text: "Link to another record by id"}), form);
  }

  function crmStatus(chat) {
    var c = chat.crm;
    var line = h("p", {"class": "crm-status status-" + c.status});
    if (c.status === "posted") {
      line.append("Chat log posted to the CRM. ");
      if (c.task_url) { line.appendChild(recordLink(c.task_url, "View chat log")); }
    } else if (c.status === "failed") {
      line.append("Chat log not posted: " + (c.error || "the CRM refused it") + ". An administrator can retry it.");
    } else if (c.status === "pending") {
      line.append("Chat log pending: it will be posted to the CRM shortly.");
    } else {
      line.append("Chat log: posted to the CRM when the chat ends.");
    }
    return line;
  }

  // Only web addresses become links: a javascript: or data: URL would run or show in our page.
  var WEB_URL = /^https?:\/\/[^\/\s]/i;

  function media(item) {
    var label = item.filename || item.url;
    if (!WEB_URL.test(item.url || "")) {
      return h("span", {"class": "file file-unlinked", text: label || "media"});
    }
    if (item.is_image) {
      return h("a", {href: item.url, target: "_blank", rel: "noopener noreferrer", "class": "thumb"},
        h("img", {src: item.url, alt: label, loading: "lazy", referrerpolicy: "no-referrer"}));
    }
    return h("a", {href: item.url, target: "_blank", rel: "noopener noreferrer", "class": "file", text: label});
  }

  var SENDER = {consumer: "Consumer", agent: "Agent", system: "System"};

  function messages(chat) {
    if (!chat.messages.length) { return h("p", {"class": "muted", text: "No messages yet."}); }
    var list = h("ol", {"class": "messages"});
    chat.messages.forEach(function (m) {
      var who = SENDER[m.sender] || m.sender;
      if (m.sender === "agent" && m.agent_name) { who += " " + m.agent_name; }
      var item = h("li", {"class": "msg msg-" + m.sender},
        h("div", {"class": "meta"}, h("strong", {text: who}), " ", h("time", {datetime: m.sent_at, text: time(m.sent_at)})),
        m.text ? h("div", {"class": "text", text: m.text}) : null);
      if (m.media && m.media.length) {
        var box = h("div", {"class": "media"});
        m.media.forEach(function (item) { box.appendChild(media(item)); });
        item.appendChild(box);
      }
      list.appendChild(item);
    });
    return list;
  }

  // What the agent typed or chose survives a redraw of the same chat (a message arriving mid-form).
  function keepInputs() {
    var state = {fields: {}, details: false, focus: null};
    detailEl.querySelectorAll("input[id], select[id]").forEach(function (el) {
      state.fields[el.id] = el.type === "radio" ? el.checked : el.value;
    });
    var details = detailEl.querySelector("details");
    state.details = !!(details && details.open);
    var active = document.activeElement;
    state.focus = active && active.id && detailEl.contains(active) ? active.id : null;
    return state;
  }

  function restoreInputs(state) {
    Object.keys(state.fields).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el) { return; }
      if (el.type === "radio") { el.checked = state.fields[id]; } else { el.value = state.fields[id]; }
    });
    var details = detailEl.querySelector("details");
    if (details && state.details) { details.open = true; }
    var focused = state.focus && document.getElementById(state.focus);
    if (focused) { focused.focus(); }
  }

  function renderDetail() {
    var kept = detailEl.getAttribute("data-chat") === selected ? keepInputs() : null;
    drawDetail();
    detailEl.setAttribute("data-chat", selected || "");
    if (kept) { restoreInputs(kept); }
  }

  function drawDetail() {
    var chat = selected && chats[selected];
    detailEl.textContent = "";
    if (!chat) {
      detailEl.appendChild(h("p", {"class": "muted", text: "Select a chat to see its screen pop and messages."}));
      return;
    }
    var outcome = chat.match.outcome || "pending";
    detailEl.appendChild(h("h2", {"class": "consumer", text: chat.consumer_display || chat.consumer_number}));
    detailEl.appendChild(h("p", {"class": "muted"},
      [chat.direction, chat.queue && ("queue " + chat.queue), chat.lang && ("language " + chat.lang),
       chat.assigned_at && ("accepted " + time(chat.assigned_at)), chat.ended_at && ("ended " + time(chat.ended_at))]
        .filter(Boolean).join(" · ")));
    var pop = h("section", {"class": "pop-box", "aria-label": "Screen pop",
                            "data-outcome": outcome}, h("h3", {text: "Match: " + (OUTCOME[outcome] || outcome)}));
    if (outcome === "single" && chat.match.records.length) { pop.appendChild(singleMatch(chat)); }
    else if (outcome === "multiple") { pop.appendChild(multipleMatch(chat)); }
    else if (outcome === "none" && !chat.linked) { pop.appendChild(noMatch(chat)); }
    else if (outcome === "pending") { pop.appendChild(h("p", {text: "The CRM has not answered yet; the match appears here when it does."})); }
    if (chat.linked) {
      pop.appendChild(h("p", {"class": "linked"}, "Chat log attaches to ",
        h("span", {"class": "tag", text: chat.linked.object}), " ",
        h("strong", {"class": "linked-name", text: chat.linked.name || chat.linked.id}), " ",
        recordLink(chat.linked.url, "Open in CRM")));
    }
    pop.appendChild(notice(chat.id) || document.createTextNode(""));
    pop.appendChild(linkById(chat));
    detailEl.appendChild(pop);
    detailEl.appendChild(h("section", {"aria-label": "CRM status"}, crmStatus(chat)));
    detailEl.appendChild(h("section", {"aria-label": "Messages"}, h("h3", {text: "Messages"}), messages(chat)));
  }

  function render() {
    if (selected && chats[selected]) {
      seen[selected] = consumerCount(chats[selected]);
      saveSeen();
    }
    renderList();
    renderDetail();
  }

  function select(id) {
    selected = id;
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", ROOT + "/agent/chats/" + encodeURIComponent(id));
    }
    render();
    var heading = detailEl.querySelector("h2");
    if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
  }

  function apply(update) {
    var isNew = !chats[update.chat_id];
    if (!take(update.chat_id, update.chat, update.version)) { return; }
    if (update.chat && isNew) {
      announcer.textContent = "New chat from " + (update.chat.consumer_display || "a consumer");
      if (!selected || !chats[selected]) { selected = update.chat_id; }
    } else if (!update.chat && selected === update.chat_id) {
      selected = null;
    }
    render();
  }

  function showBanner(down) {
    if (!down) {
      if (bannerTimer) { clearTimeout(bannerTimer); bannerTimer = null; }
      banner.hidden = true;
      return;
    }
    // A stream that ends on schedule reconnects at once: only a real outage shows the banner.
    if (!bannerTimer && banner.hidden) {
      bannerTimer = setTimeout(function () { bannerTimer = null; banner.hidden = false; }, 1500);
    }
  }

  function connect() {
    source = new EventSource(ROOT + "/agent/stream?after=" + encodeURIComponent(lastId));
    source.addEventListener("hello", function () { retryDelay = 1000; showBanner(false); });
    source.addEventListener("chat", function (event) {
      var id = parseInt(event.lastEventId, 10);
      if (!isNaN(id)) { lastId = Math.max(lastId, id); }
      apply(JSON.parse(event.data));
    });
    source.addEventListener("error", function () {
      showBanner(true);
      if (source.readyState === EventSource.CLOSED) {
        // The server answered with an error (or a proxy cut us off): the browser gives up, we do not.
        source.close();
        fetch(ROOT + "/api/agent/chats", {credentials: "same-origin"}).then(function (response) {
          if (response.status === 401) {
            banner.textContent = "You were signed out. Open a new sign-in link to continue.";
            banner.hidden = false;
            return;
          }
          setTimeout(connect, retryDelay);
        }).catch(function () { setTimeout(connect, retryDelay); });
        retryDelay = Math.min(retryDelay * 2, 15000);
      }
    });
  }

  window.crmConsole = {
    chats: function () { return chats; },
    lastEventId: function () { return lastId; },
    disconnect: function () { if (source) { source.close(); } showBanner(true); },
    reconnect: function () { connect(); }
  };

  initial.chats.forEach(function (chat) { take(chat.id, chat, chat.version); });
  if (!selected && initial.chats.length) { selected = ordered()[0].id; }
  render();
  connect();
})();
