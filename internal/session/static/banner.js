// impersonator banner: include on the customer app's pages with
//   <script src="https://<impersonator>/impersonation/banner.js" defer></script>
// It shows "You are viewing as <subject>, impersonated by <admin> · ends in
// mm:ss · End" while an impersonation session is open ("<subject> (read-only)"
// when its scope is read), and nothing otherwise.
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script ? script.src.replace(/\/banner\.js(?:[?#].*)?$/, "") : "/impersonation";

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function render(s) {
    var host = document.createElement("div");
    host.setAttribute("data-impersonator-banner", "");
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    var bar = document.createElement("div");
    bar.setAttribute("role", "status");
    bar.style.cssText = "position:fixed;left:0;right:0;top:0;z-index:2147483647;font:14px/1.4 system-ui,sans-serif;" +
      "background:#b00020;color:#fff;padding:6px 12px;display:flex;gap:8px;align-items:center;justify-content:center";
    var text = document.createElement("span");
    var end = document.createElement("button");
    end.type = "button";
    end.textContent = "End";
    end.style.cssText = "font:inherit;color:#b00020;background:#fff;border:0;border-radius:3px;padding:1px 8px;cursor:pointer";
    end.addEventListener("click", function () {
      end.disabled = true;
      fetch(base + "/logout", { method: "POST", credentials: "include" }).then(function () { window.location.reload(); });
    });
    bar.appendChild(text);
    bar.appendChild(end);
    root.appendChild(bar);
    document.body.appendChild(host);
    var ends = Date.parse(s.expires_at);
    function tick() {
      var left = Math.max(0, Math.floor((ends - Date.now()) / 1000));
      text.textContent = "You are viewing as " + s.subject + (s.scope === "read" ? " (read-only)" : "") +
        ", impersonated by " + (s.actor.email || s.actor.id) +
        " \u00b7 ends in " + pad(Math.floor(left / 60)) + ":" + pad(left % 60) + " \u00b7";
      if (left === 0) { window.location.reload(); return; }
      setTimeout(tick, 1000);
    }
    tick();
  }

  fetch(base + "/session", { credentials: "include" })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (s) { if (s) { render(s); } })
    .catch(function () {});
})();
