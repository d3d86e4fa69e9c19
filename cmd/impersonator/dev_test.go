package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/redistest"
)

// devJWT runs `impersonator dev forest-jwt args…` with FOREST_AUTH_SECRET
// set to secret (unset when empty) and returns stdout, stderr and the error.
func devJWT(t *testing.T, secret string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	vars := map[string]string{}
	if secret != "" {
		vars["FOREST_AUTH_SECRET"] = secret
	}
	err := run(context.Background(), append([]string{"dev", "forest-jwt"}, args...), env(vars), &out, &errb)
	return out.String(), errb.String(), err
}

// TestDevForestJWT: the printed JWT is all of stdout, verifies with the
// secret (HS256), carries the admin's claims with a numeric id, and
// expires after --ttl (1h by default).
func TestDevForestJWT(t *testing.T) {
	before := time.Now()
	out, _, err := devJWT(t, forestSecret, "--email", "grace@example.com", "--id", "1002", "--team", "Operations",
		"--role", "Support", "--permission-level", "developer")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 || strings.Count(out, ".") != 2 {
		t.Fatalf("stdout = %q, want the JWT alone on one line", out)
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()).
		ParseWithClaims(strings.TrimSpace(out), claims, func(*jwt.Token) (any, error) { return []byte(forestSecret), nil })
	if err != nil || !tok.Valid {
		t.Fatalf("the JWT does not verify with FOREST_AUTH_SECRET: %v", err)
	}
	want := map[string]any{"id": float64(1002), "email": "grace@example.com", "team": "Operations", "role": "Support",
		"permissionLevel": "developer", "firstName": "grace"}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %#v, want %#v", k, claims[k], v)
		}
	}
	for _, k := range []string{"lastName", "renderingId", "iat"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("claim %s is missing", k)
		}
	}
	exp, _ := claims.GetExpirationTime()
	if d := exp.Sub(before); d < time.Hour-time.Second || d > time.Hour+5*time.Second {
		t.Errorf("exp is %s after the call, want the default 1h", d)
	}

	// --ttl, and defaults for everything but the email.
	out, _, err = devJWT(t, forestSecret, "--email", "ada@example.com", "--ttl", "24h")
	if err != nil {
		t.Fatal(err)
	}
	claims = jwt.MapClaims{}
	if _, err := jwt.NewParser().ParseWithClaims(strings.TrimSpace(out), claims, func(*jwt.Token) (any, error) { return []byte(forestSecret), nil }); err != nil {
		t.Fatal(err)
	}
	exp, _ = claims.GetExpirationTime()
	if d := time.Until(exp.Time); d < 24*time.Hour-5*time.Second || d > 24*time.Hour+time.Second {
		t.Errorf("--ttl 24h: exp in %s", d)
	}
	if claims["id"] != float64(1001) || claims["team"] != "Support" || claims["role"] != "Admin" || claims["permissionLevel"] != "admin" {
		t.Errorf("default claims = %v", claims)
	}
}

// TestDevForestJWTID: an id is a JSON number only when a JSON reader keeps
// it exactly; otherwise it stays a string.
func TestDevForestJWTID(t *testing.T) {
	for id, want := range map[string]string{
		"42":               `"id":42,`,
		"-7":               `"id":-7,`,
		"9007199254740991": `"id":9007199254740991,`,
		"9007199254740992": `"id":"9007199254740992",`,
		"007":              `"id":"007",`,
		"+5":               `"id":"+5",`,
		"usr_1":            `"id":"usr_1",`,
	} {
		tok, err := forestJWTFor(forestSecret, forestAdmin{ID: id, Email: "a@example.com"}, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := jwt.NewParser().DecodeSegment(strings.Split(tok, ".")[1])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(payload), want) {
			t.Errorf("--id %s: payload %s, want %s", id, payload, want)
		}
	}
}

// TestDevForestJWTRefusals: no secret, a secret serve would refuse, a bad
// TTL, a missing email and a bad flag are errors that say why, and print
// nothing on stdout.
func TestDevForestJWTRefusals(t *testing.T) {
	for _, c := range []struct {
		name, secret string
		args         []string
		want         string
	}{
		{"no secret", "", []string{"--email", "a@example.com"}, "FOREST_AUTH_SECRET is not set"},
		{"short secret", "tooshort", []string{"--email", "a@example.com"}, "shorter than 32"},
		{"repetitive secret", strings.Repeat("ab", 20), []string{"--email", "a@example.com"}, "is a piece of 2 characters repeated"},
		{"no email", forestSecret, nil, "--email is required"},
		{"ttl too long", forestSecret, []string{"--email", "a@example.com", "--ttl", "25h"}, "--ttl 25h0m0s is out of range"},
		{"ttl zero", forestSecret, []string{"--email", "a@example.com", "--ttl", "0"}, "out of range"},
		{"argument", forestSecret, []string{"--email", "a@example.com", "extra"}, `unexpected argument "extra"`},
		{"bad flag", forestSecret, []string{"--emial", "a@example.com"}, "flag provided but not defined: -emial"},
	} {
		out, errOut, err := devJWT(t, c.secret, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one saying %q", c.name, err, c.want)
		}
		if out != "" || errOut != "" {
			t.Errorf("%s: printed stdout %q, stderr %q; want nothing (main prints the error once)", c.name, out, errOut)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"dev", "forest-jwt", "--help"}, env(nil), &out, io.Discard); !errors.Is(err, flag.ErrHelp) ||
		!strings.Contains(out.String(), "-permission-level") {
		t.Errorf("dev forest-jwt --help = %v\n%s", err, out.String())
	}
	if err := run(context.Background(), []string{"dev"}, env(nil), io.Discard, io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("dev without a subcommand = %v, want usage", err)
	}
}

// TestDevForestJWTAcceptedByAction: the real Forest action of a running
// serve accepts the printed JWT and mints.
func TestDevForestJWTAcceptedByAction(t *testing.T) {
	base, _ := startServe(t, map[string]string{"FOREST_AUTH_SECRET": forestSecret, "IMPERSONATOR_KEYS_DIR": t.TempDir()})
	out, _, err := devJWT(t, forestSecret, "--email", "ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	body := `{"data":{"type":"custom-action-requests","attributes":{"collection_name":"users","ids":["42"],` +
		`"values":{"Reason":"ticket 1234: cannot see invoices"},"smart_action_id":"users-impersonate"}}}`
	req, _ := http.NewRequest(http.MethodPost, base+"/forest/actions/impersonate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(out))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.Contains(string(b), `"success":"Impersonating users 42"`) {
		t.Fatalf("action with the dev JWT: %d %s", res.StatusCode, b)
	}
	// Signed with another secret, the same request is refused.
	other, _, err := devJWT(t, "another-forest-auth-secret-0123456789abcdef", "--email", "ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest(http.MethodPost, base+"/forest/actions/impersonate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(other))
	req.Header.Set("Content-Type", "application/json")
	res2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if res2.StatusCode != 401 {
		t.Errorf("action with a JWT of another secret: %d, want 401", res2.StatusCode)
	}
}

// shellStep is one command of a README shell block (`$ ` lines, with their
// `\` continuations joined) and the output lines printed under it.
type shellStep struct {
	terminal int // the "# Terminal N" comment it follows; 0 before any
	cmd      string
	out      []string
}

// readmeBlock returns the lines of the fenced block between the README
// markers <!-- name --> and <!-- /name -->.
func readmeBlock(t *testing.T, readme, name string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "<!-- "+name+" -->\n")
	block, _, ok2 := strings.Cut(rest, "<!-- /"+name+" -->")
	if !ok || !ok2 {
		t.Fatalf("README has no <!-- %s --> … <!-- /%s --> block", name, name)
	}
	lines := strings.Split(strings.TrimSpace(block), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "```") || lines[len(lines)-1] != "```" {
		t.Fatalf("the %s block is not one fenced code block", name)
	}
	return lines[1 : len(lines)-1]
}

var terminalComment = regexp.MustCompile(`^# Terminal (\d+)\b`)

// shellSteps reads a block that pastes as is: commands as plain lines
// (a trailing backslash continues one), comments after "#", and what a
// command prints on the comment lines after it that start with "#> ".
func shellSteps(t *testing.T, lines []string) []shellStep {
	t.Helper()
	var steps []shellStep
	terminal := 0
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.TrimSpace(l) == "":
		case strings.HasPrefix(l, "#> "):
			if len(steps) == 0 {
				t.Fatalf("output line before any command: %q", l)
			}
			steps[len(steps)-1].out = append(steps[len(steps)-1].out, strings.TrimPrefix(l, "#> "))
		case strings.HasPrefix(l, "#"):
			if m := terminalComment.FindStringSubmatch(l); m != nil {
				fmt.Sscan(m[1], &terminal)
			}
		case strings.HasPrefix(l, "$ "):
			t.Fatalf("a prompt does not paste: %q", l)
		default:
			cmd := l
			for strings.HasSuffix(cmd, `\`) && i+1 < len(lines) {
				i++
				cmd = strings.TrimSuffix(cmd, `\`) + " " + strings.TrimSpace(lines[i])
			}
			steps = append(steps, shellStep{terminal: terminal, cmd: cmd})
		}
	}
	return steps
}

// shellWords splits a command line as sh would for the simple commands of
// the README: quotes, backslashes, $NAME expansion, `|` and comments.
func shellWords(line string, vars map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	name := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`)
	expand := func(i int) int { // line[i] == '$'
		n := name.FindString(line[i+1:])
		if n == "" {
			cur.WriteByte('$')
			return i + 1
		}
		cur.WriteString(vars[n])
		return i + 1 + len(n)
	}
	flush := func() {
		if inWord {
			words = append(words, cur.String())
		}
		cur.Reset()
		inWord = false
	}
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			flush()
			i++
		case c == '#' && !inWord:
			return words, nil
		case c == '|':
			flush()
			words = append(words, "|")
			i++
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated '")
			}
			cur.WriteString(line[i+1 : i+1+j])
			inWord = true
			i += j + 2
		case c == '"':
			inWord = true
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				switch {
				case line[i] == '\\' && i+1 < len(line) && strings.IndexByte(`"\$`, line[i+1]) >= 0:
					cur.WriteByte(line[i+1])
					i++
				case line[i] == '$':
					i = expand(i) - 1
				default:
					cur.WriteByte(line[i])
				}
			}
			if i >= len(line) {
				return nil, errors.New(`unterminated "`)
			}
			i++
		case c == '\\' && i+1 < len(line):
			cur.WriteByte(line[i+1])
			inWord = true
			i += 2
		case c == '$':
			inWord = true
			i = expand(i)
		default:
			cur.WriteByte(c)
			inWord = true
			i++
		}
	}
	flush()
	return words, nil
}

// request is one HTTP request the try-by-hand block made.
type request struct {
	method, path, body string
	status             int
}

// shell runs the README's commands: export, make run, go run
// ./cmd/impersonator, curl, tee and sed, each as the test's equivalent.
type shell struct {
	t        *testing.T
	base     string            // serve's URL once `make run` ran
	serveLog *syncBuffer       // serve's stderr
	vars     map[string]string // of the current terminal
	files    map[string]string
	jars     map[string][]*http.Cookie
	requests []request
	keysDir  string   // make run's keys folder
	dirs     []string // made by mkdir -p
}

// scratch checks that a file the block writes goes to a folder it made
// and git ignores: answers and session cookies stay out of the repository.
func (sh *shell) scratch(name string) {
	t := sh.t
	t.Helper()
	dir := filepath.Dir(name)
	if !slices.Contains(sh.dirs, dir) {
		t.Errorf("the block writes %s outside a folder it made with mkdir -p", name)
	}
	if err := exec.Command("git", "-C", "../..", "check-ignore", "-q", name).Run(); err != nil {
		t.Errorf("git does not ignore %s, which the block writes (a live session cookie, an answer): %v", name, err)
	}
}

const makeRunURL = "http://127.0.0.1:8080" // make run's IMPERSONATOR_LISTEN default

var assignment = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=\$\((.*)\)$`)

// exec runs one command line and returns what it prints on stdout.
func (sh *shell) exec(line string) string {
	t := sh.t
	t.Helper()
	if m := assignment.FindStringSubmatch(line); m != nil {
		sh.vars[m[1]] = strings.TrimRight(sh.exec(m[2]), "\n")
		return ""
	}
	words, err := shellWords(line, sh.vars)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	var out string
	for seg := range strings.SplitSeq(strings.Join(words, "\x00"), "\x00|\x00") {
		out = sh.command(strings.Split(seg, "\x00"), out)
	}
	return out
}

// command runs one simple command with stdin and returns its stdout.
func (sh *shell) command(w []string, stdin string) string {
	t := sh.t
	t.Helper()
	switch {
	case len(w) == 2 && w[0] == "export" && strings.Contains(w[1], "="):
		k, v, _ := strings.Cut(w[1], "=")
		sh.vars[k] = v
		return ""
	case len(w) == 2 && w[0] == "make" && w[1] == "run":
		if sh.base != "" {
			t.Fatal("make run twice")
		}
		// The module's keys folder, as make run uses it: a fresh one.
		sh.keysDir = t.TempDir()
		vars := maps.Clone(sh.vars)
		vars["IMPERSONATOR_KEYS_DIR"] = sh.keysDir
		sh.base, sh.serveLog = startServe(t, vars)
		return ""
	case len(w) == 3 && w[0] == "mkdir" && w[1] == "-p":
		sh.dirs = append(sh.dirs, w[2])
		return ""
	case len(w) > 3 && w[0] == "go" && w[1] == "run" && w[2] == "./cmd/impersonator":
		var out, errb bytes.Buffer
		vars := maps.Clone(sh.vars)
		if vars["IMPERSONATOR_KEYS_DIR"] == "" && sh.keysDir != "" { // the same folder as terminal 1
			vars["IMPERSONATOR_KEYS_DIR"] = sh.keysDir
		}
		if err := run(context.Background(), w[3:], env(vars), &out, &errb); err != nil {
			t.Fatalf("impersonator %s: %v\n%s", strings.Join(w[3:], " "), err, errb.String())
		}
		return out.String()
	case len(w) == 2 && w[0] == "tee":
		sh.scratch(w[1])
		sh.files[w[1]] = stdin
		return stdin
	case len(w) == 4 && w[0] == "sed" && w[1] == "-E":
		return sed(t, w[2], sh.files[w[3]])
	case len(w) > 1 && w[0] == "curl":
		return sh.curl(w[1:])
	}
	t.Fatalf("the try-by-hand block runs %q, which this test does not know how to run", w)
	return ""
}

// sed applies an `s/RE/REPL/` script (ERE, \N back-references) to each
// line of in, replacing the first match.
func sed(t *testing.T, script, in string) string {
	t.Helper()
	parts := strings.Split(script, "/")
	if len(parts) != 4 || parts[0] != "s" || parts[3] != "" {
		t.Fatalf("sed script %q is not s/RE/REPL/", script)
	}
	re := regexp.MustCompile(parts[1])
	repl := regexp.MustCompile(`\\([0-9])`).ReplaceAllString(parts[2], `$${$1}`)
	lines := strings.SplitAfter(in, "\n")
	for i, l := range lines {
		body := strings.TrimSuffix(l, "\n")
		if loc := re.FindStringSubmatchIndex(body); loc != nil {
			lines[i] = body[:loc[0]] + string(re.ExpandString(nil, repl, body, loc)) + body[loc[1]:] + l[len(body):]
		}
	}
	return strings.Join(lines, "")
}

func (sh *shell) curl(args []string) string {
	t := sh.t
	t.Helper()
	var url, body, method, saveJar, sendJar string
	header := http.Header{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-s":
		case (a == "-H" || a == "-d" || a == "-c" || a == "-b") && i+1 < len(args):
			i++
			switch a {
			case "-H":
				k, v, ok := strings.Cut(args[i], ":")
				if !ok {
					t.Fatalf("curl -H %q", args[i])
				}
				header.Add(k, strings.TrimSpace(v))
			case "-d":
				body, method = args[i], http.MethodPost
			case "-c":
				saveJar = args[i]
				sh.scratch(saveJar)
			case "-b":
				sendJar = args[i]
			}
		case !strings.HasPrefix(a, "-") && url == "":
			url = a
		default:
			t.Fatalf("curl %q: this test does not know %q", args, a)
		}
	}
	if !strings.HasPrefix(url, makeRunURL+"/") {
		t.Fatalf("curl %s: the block calls make run's %s", url, makeRunURL)
	}
	if sh.base == "" {
		t.Fatalf("curl %s before make run", url)
	}
	if method == "" {
		method = http.MethodGet
	}
	if body != "" && header.Get("Content-Type") == "" {
		header.Set("Content-Type", "application/x-www-form-urlencoded") // as curl -d does
	}
	req, err := http.NewRequest(method, sh.base+strings.TrimPrefix(url, makeRunURL), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	if sendJar != "" {
		for _, c := range sh.jars[sendJar] {
			req.AddCookie(c)
		}
	}
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if saveJar != "" {
		sh.jars[saveJar] = append(sh.jars[saveJar], res.Cookies()...)
	}
	sh.requests = append(sh.requests, request{method: method, path: strings.TrimPrefix(url, makeRunURL), body: body, status: res.StatusCode})
	return string(b)
}

// sameJSONShape reports why the README's printed output want differs from
// the real output got, or "": the same JSON members and values, except that
// a README string holding "…" (trimmed by hand) stands for any non-empty
// string, and a README time for any RFC 3339 time.
func sameJSONShape(want, got any, at string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: got %v, want an object", at, got)
		}
		if wk, gk := slices.Sorted(maps.Keys(w)), slices.Sorted(maps.Keys(g)); !slices.Equal(wk, gk) {
			return fmt.Sprintf("%s: members %v, README shows %v", at, gk, wk)
		}
		for k := range w {
			if d := sameJSONShape(w[k], g[k], at+"."+k); d != "" {
				return d
			}
		}
		return ""
	case string:
		g, ok := got.(string)
		switch {
		case !ok:
			return fmt.Sprintf("%s: got %v, want a string", at, got)
		case strings.Contains(w, "…"):
			if g == "" {
				return at + ": empty"
			}
			return ""
		}
		if _, err := time.Parse(time.RFC3339, w); err == nil {
			if _, err := time.Parse(time.RFC3339, g); err != nil {
				return fmt.Sprintf("%s: got %q, want a time", at, g)
			}
			return ""
		}
		if g != w {
			return fmt.Sprintf("%s: got %q, README shows %q", at, g, w)
		}
		return ""
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		return fmt.Sprintf("%s: got %v, README shows %v", at, got, want)
	}
	return ""
}

// TestTryByHand runs the README's "Try it by hand" block as written: its
// exports, `make run` (serve through run), `go run ./cmd/impersonator …`
// (run), its curl requests (over HTTP to that serve), tee and sed; checks
// that it exercises the action, the login, the session and a replay with
// the real action body, and that every output it shows is the real one
// (but for what it trims and the times). Then the README's claim after the
// block: the CLI reaches the embedded Redis at the address serve's log
// prints, and audit list shows the three events.
func TestTryByHand(t *testing.T) {
	readme := readFile(t, "../../README.md")
	sh := &shell{t: t, files: map[string]string{}, jars: map[string][]*http.Cookie{}}
	terminal := -1
	for _, s := range shellSteps(t, readmeBlock(t, readme, "try-by-hand")) {
		if s.terminal != terminal { // a new terminal: a new shell, no variables
			terminal, sh.vars = s.terminal, map[string]string{}
		}
		out := sh.exec(s.cmd)
		if len(s.out) == 0 {
			continue
		}
		if len(s.out) != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("$ %s\nprints\n%s\nREADME shows\n%s", s.cmd, out, strings.Join(s.out, "\n"))
			continue
		}
		var want, got any
		if err := json.Unmarshal([]byte(s.out[0]), &want); err != nil {
			t.Errorf("README output of %q is not JSON: %v", s.cmd, err)
			continue
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Errorf("output of %q is not JSON: %v\n%s", s.cmd, err, out)
			continue
		}
		if d := sameJSONShape(want, got, "$"); d != "" {
			t.Errorf("$ %s\nprints %s\nREADME shows %s\n%s", s.cmd, strings.TrimSpace(out), s.out[0], d)
		}
	}

	type call struct {
		method, path string
		status       int
	}
	var calls []call
	for _, r := range sh.requests {
		calls = append(calls, call{r.method, r.path, r.status})
	}
	want := []call{
		{"POST", "/forest/actions/impersonate", 200},
		{"POST", "/impersonation/login", 200},
		{"GET", "/impersonation/session", 200},
		{"POST", "/impersonation/login", 401},
	}
	if !slices.Equal(calls, want) {
		t.Fatalf("the block makes the requests\n%v\nwant\n%v", calls, want)
	}
	var action struct {
		Data struct {
			Type       string `json:"type"`
			Attributes struct {
				Collection string            `json:"collection_name"`
				IDs        []string          `json:"ids"`
				Values     map[string]string `json:"values"`
				ActionID   string            `json:"smart_action_id"`
			} `json:"attributes"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(sh.requests[0].body), &action); err != nil {
		t.Fatal(err)
	}
	a := action.Data.Attributes
	if action.Data.Type != "custom-action-requests" || a.Collection != "users" || !slices.Equal(a.IDs, []string{"42"}) ||
		a.Values["Reason"] == "" || a.ActionID != "users-impersonate" {
		t.Errorf("the block's action body = %+v, want Forest's custom action request on users 42 with a Reason", action)
	}

	// After the block: `REDIS_URL=<the address serve's log prints> impersonator audit list`.
	m := regexp.MustCompile(`REDIS_URL=(redis://127\.0\.0\.1:[0-9]+)`).FindStringSubmatch(sh.serveLog.String())
	if m == nil {
		t.Fatalf("serve's log does not print REDIS_URL=redis://127.0.0.1:PORT:\n%s", sh.serveLog.String())
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"audit", "list"}, env(map[string]string{"REDIS_URL": m[1]}), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"impersonation.minted", "impersonation.redeemed", "impersonation.rejected"} {
		if !strings.Contains(out.String(), typ) {
			t.Errorf("audit list through the logged REDIS_URL lacks %s:\n%s", typ, out.String())
		}
	}
	if !strings.Contains(readme, "`REDIS_URL=redis://127.0.0.1:PORT go run ./cmd/impersonator audit list`") {
		t.Error("README no longer shows the audit list command this test runs")
	}
}

// TestSessionCheckWithoutCookieNeedsNoRedis backs the README's Redis load
// claim: the session check of a request without a valid session cookie
// (every ordinary user's, behind forward-auth) is answered without Redis.
func TestSessionCheckWithoutCookieNeedsNoRedis(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "--dir", dir}, env(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	base, _ := startServe(t, map[string]string{"REDIS_URL": srv.URL(), "IMPERSONATOR_KEYS_DIR": dir})
	srv.Stop()
	t.Cleanup(srv.Restart) // before serve stops, so its last checkpoint does not wait on a dead Redis
	for name, cookie := range map[string]string{"no cookie": "", "forged cookie": "impersonation_session=eyJhbGciOiJFZERTQSJ9.e30.AAAA"} {
		req, _ := http.NewRequest(http.MethodGet, base+"/impersonation/session", nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 {
			t.Errorf("%s, Redis stopped: session check %d, want 401 (answered without Redis)", name, res.StatusCode)
		}
	}
	if code := getJSON(t, base+"/readyz", nil); code != 503 {
		t.Errorf("readyz with Redis stopped = %d, want 503 (Redis is really down)", code)
	}
}
