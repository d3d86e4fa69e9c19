// impersonator redirect delivery: read the one-time token from the URL
// fragment (never sent to any server), remove it from the address bar and
// history, and post it to the login endpoint as a first-party form.
(function () {
  "use strict";
  var status = document.getElementById("status");
  var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  history.replaceState(null, "", window.location.pathname);
  if (!match) {
    status.textContent = "This link holds no impersonation token. Start again from the admin panel.";
    return;
  }
  var form = document.createElement("form");
  form.method = "POST";
  form.action = "login";
  var input = document.createElement("input");
  input.type = "hidden";
  input.name = "token";
  input.value = decodeURIComponent(match[1]);
  form.appendChild(input);
  document.body.appendChild(form);
  form.submit();
})();
