// impersonator banner: include on the customer app's pages with
//   <script src="https://<impersonator>/impersonation/banner.js" defer></script>
// or, to name the customer (the app's own display name for them, shown as
// text, never as HTML), when the app's page is impersonated:
//   <script src="…/banner.js" data-name="Grace Hopper" defer></script>
//
// It shows "You are viewing as <name> (<subject>), impersonated by <admin> ·
// ends in mm:ss · End" while an impersonation session is open ("(read-only)"
// when its scope is read), and nothing otherwise. The bar is the body's
// first child, in the page's flow and sticky at the top: it pushes the page
// down instead of covering it; its height is the root's
// --impersonator-banner-height, for apps whose own bars are fixed.
//
// It asks the session endpoint again every 5 seconds. When the session ends
// (that 401 also clears the stale cookie), it reloads the page, so that the
// app, which no longer receives the cookie, renders as not impersonating
// too. It never disappears while the app says it is impersonating
// (data-name): when the session endpoint cannot be reached it says so, and
// when the session has ended but the app still names a customer it says
// that.
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script ? script.src.replace(/\/banner\.js(?:[?#].*)?$/, "") : "/impersonation";
  // The app's display name for the customer: text only, at most 100
  // characters, control characters and bidi overrides removed (and a <bdi>
  // isolates its direction), so it cannot reorder the banner's own words.
  var name = ((script && script.getAttribute("data-name")) || "")
    .replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, "").trim().slice(0, 100);
  var POLL = 5000;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  var bar, text, who, state, live = null, ends = 0, timer = 0;

  function build() {
    var host = document.createElement("div");
    host.setAttribute("data-impersonator-banner", "");
    host.style.cssText = "display:block;position:sticky;top:0;left:0;right:0;z-index:2147483647;margin:0;padding:0";
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    bar = document.createElement("div");
    bar.setAttribute("role", "status");
    bar.style.cssText = "font:14px/1.4 system-ui,sans-serif;background:#b00020;color:#fff;padding:6px 12px;" +
      "display:flex;gap:8px;align-items:center;justify-content:center;flex-wrap:wrap";
    text = document.createElement("span");
    who = document.createElement("bdi");
    state = document.createTextNode("");
    var end = document.createElement("button");
    end.type = "button";
    end.textContent = "End";
    end.style.cssText = "font:inherit;color:#b00020;background:#fff;border:0;border-radius:3px;padding:1px 8px;cursor:pointer";
    end.addEventListener("click", function () {
      end.disabled = true;
      var reload = function () { window.location.reload(); };
      fetch(base + "/logout", { method: "POST", credentials: "include" }).then(reload, reload);
    });
    text.appendChild(document.createTextNode("You are viewing as "));
    text.appendChild(who);
    text.appendChild(state);
    bar.appendChild(text);
    bar.appendChild(end);
    root.appendChild(bar);
    document.body.insertBefore(host, document.body.firstChild);
    var resize = function () {
      document.documentElement.style.setProperty("--impersonator-banner-height", host.getBoundingClientRect().height + "px");
    };
    resize();
    if (window.ResizeObserver) {
      new ResizeObserver(resize).observe(host); // the text wraps, the window narrows
    } else {
      window.addEventListener("resize", resize);
    }
  }

  function label(s) {
    if (name && s) { return name + " (" + s.subject + ")"; }
    return name || s.subject;
  }

  // show renders what is known: s, the live session (or null), and why
  // not when it is null ("ended", "unreachable").
  function show(s, why) {
    if (!bar) { build(); }
    clearTimeout(timer);
    if (s) {
      ends = Date.parse(s.expires_at);
      who.textContent = label(s);
      var tick = function () {
        var left = Math.max(0, Math.floor((ends - Date.now()) / 1000));
        state.textContent = (s.scope === "read" ? " (read-only)" : "") +
          ", impersonated by " + (s.actor.email || s.actor.id) +
          " \u00b7 ends in " + pad(Math.floor(left / 60)) + ":" + pad(left % 60) + " \u00b7";
        if (left === 0) { window.location.reload(); return; }
        timer = setTimeout(tick, 1000);
      };
      tick();
      return;
    }
    who.textContent = live ? label(live) : name;
    state.textContent = why === "ended" ?
      " \u00b7 the impersonation session has ended \u00b7" :
      " \u00b7 impersonation status unknown: impersonator cannot be reached \u00b7";
  }

  // check asks the session endpoint: 200 live, 401 ended (the answer also
  // clears the cookie), anything else or no answer: unknown.
  function check() {
    return fetch(base + "/session", { credentials: "include", cache: "no-store" })
      .then(function (r) {
        if (r.ok) { return r.json().then(function (s) { return { s: s }; }); }
        return { why: r.status === 401 ? "ended" : "unreachable" };
      }, function () { return { why: "unreachable" }; });
  }

  function poll() {
    check().then(function (got) {
      if (got.s) {
        live = got.s;
        show(got.s);
      } else if (got.why === "ended" && live) {
        // Ended while shown: the cookie is cleared; the app's next render
        // is not impersonated.
        window.location.reload();
        return;
      } else if (live || name) {
        show(null, got.why);
      }
      if (live || name) { setTimeout(poll, POLL); }
    });
  }

  if (document.body) {
    poll();
  } else {
    document.addEventListener("DOMContentLoaded", poll);
  }
})();
