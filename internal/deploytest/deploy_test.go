// Package deploytest holds the deployment kit's tests: the Dockerfile, run
// without a container engine (its build stage's commands run here, its final
// filesystem assembled in a folder and the binary run from it, chrooted, as
// the image's user), and the systemd units (systemd-analyze).
package deploytest

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const root = "../.."

// instruction is one Dockerfile instruction: its keyword and the rest.
type instruction struct{ cmd, args string }

type stage struct {
	from, name string
	inst       []instruction
}

// parseDockerfile reads the stages of a Dockerfile (comments dropped,
// continuation lines joined).
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []stage
	var line string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			line += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		line += l
		cmd, args, _ := strings.Cut(line, " ")
		line = ""
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			from, name, _ := strings.Cut(args, " AS ")
			stages = append(stages, stage{from: strings.TrimSpace(from), name: strings.TrimSpace(name)})
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s before FROM", cmd)
		}
		s := &stages[len(stages)-1]
		s.inst = append(s.inst, instruction{cmd, strings.TrimSpace(args)})
	}
	return stages
}

func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.inst {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

func jsonArgs(t *testing.T, what, s string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil || len(v) == 0 {
		t.Fatalf("%s %q is not the exec (JSON) form", what, s)
	}
	return v
}

// TestDockerfile builds the image's filesystem as the Dockerfile says,
// without a container engine: the build stage's RUN commands run here with
// its WORKDIR the module (COPY . .) and its /out in a temporary folder;
// the final stage's COPY --from lines assemble the image's filesystem; the
// binary must be static; then the entry point runs chrooted into that
// filesystem as the image's USER with its ENV, serves /healthz, passes the
// HEALTHCHECK command (run the same way), and exits 0 on SIGTERM.
func TestDockerfile(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary chrooted")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to chroot and change user, as the container engine does")
	}
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) != 2 {
		t.Fatalf("want a build stage and a final stage, got %d stages", len(stages))
	}
	build, final := stages[0], stages[1]
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(gomod)[1]
	if !strings.HasPrefix(build.from, "golang:"+string(goVersion)+"-") {
		t.Errorf("build stage FROM %s, want the go.mod toolchain golang:%s", build.from, goVersion)
	}
	if final.from != "scratch" && !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s, want scratch or distroless/static", final.from)
	}

	// The build stage, here.
	tmp := t.TempDir()
	out := filepath.Join(tmp, "out")
	env := append(os.Environ(), "VERSION=v0.0.0-deploytest", "COMMIT=deploytest")
	sawBuild := false
	for _, run := range build.all("RUN") {
		if strings.Contains(run, "go build") {
			sawBuild = true
			if !strings.Contains(run, "CGO_ENABLED=0") {
				t.Errorf("the build command does not set CGO_ENABLED=0: %s", run)
			}
		}
		cmd := exec.Command("sh", "-ec", strings.ReplaceAll(run, "/out", out))
		cmd.Dir = root
		cmd.Env = env
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("RUN %s: %v\n%s", run, err, b)
		}
	}
	if !sawBuild {
		t.Fatal("the build stage runs no go build")
	}

	// The final stage's filesystem.
	rootfs := filepath.Join(tmp, "rootfs")
	for _, cp := range final.all("COPY") {
		f := strings.Fields(cp)
		chown := ""
		var paths []string
		from := ""
		for _, a := range f {
			switch {
			case strings.HasPrefix(a, "--from="):
				from = strings.TrimPrefix(a, "--from=")
			case strings.HasPrefix(a, "--chown="):
				chown = strings.TrimPrefix(a, "--chown=")
			default:
				paths = append(paths, a)
			}
		}
		if from != build.name || len(paths) != 2 {
			t.Fatalf("COPY %s: want --from=%s SRC DST", cp, build.name)
		}
		src := strings.Replace(paths[0], "/out", out, 1)
		if !strings.HasPrefix(paths[0], "/out") {
			t.Fatalf("COPY %s copies from outside /out", cp)
		}
		dst := filepath.Join(rootfs, paths[1])
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v %s", cp, err, b)
		}
		if chown != "" {
			if b, err := exec.Command("chown", "-R", chown, dst).CombinedOutput(); err != nil {
				t.Fatalf("chown: %v %s", err, b)
			}
		}
	}

	users := final.all("USER")
	if len(users) != 1 {
		t.Fatalf("final stage has %d USER lines, want 1", len(users))
	}
	uidS, gidS, _ := strings.Cut(users[0], ":")
	uid, err1 := strconv.Atoi(uidS)
	gid, err2 := strconv.Atoi(gidS)
	if err1 != nil || err2 != nil || uid == 0 || gid == 0 {
		t.Fatalf("USER %s: want a numeric non-root uid:gid (the image has no /etc/passwd to look names up)", users[0])
	}
	entry := jsonArgs(t, "ENTRYPOINT", final.all("ENTRYPOINT")[0])
	if len(entry) < 2 || entry[1] != "serve" {
		t.Errorf("ENTRYPOINT %v, want the binary and serve", entry)
	}
	hc := final.all("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("want one HEALTHCHECK, got %d", len(hc))
	}
	_, hcCmd, ok := strings.Cut(hc[0], "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %s has no CMD", hc[0])
	}
	health := jsonArgs(t, "HEALTHCHECK CMD", hcCmd)

	// Static: no interpreter, no shared library.
	binary := filepath.Join(rootfs, entry[0])
	ef, err := elf.Open(binary)
	if err != nil {
		t.Fatalf("the entry point %s is not in the image: %v", entry[0], err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, _ := ef.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
	ef.Close()

	// Run it from the image's filesystem, as the image's user, with its ENV.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	imageEnv := []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	for _, e := range final.all("ENV") {
		imageEnv = append(imageEnv, strings.Fields(e)...)
	}
	// A test, not a load balancer: drain briefly; listen on a free port.
	imageEnv = append(imageEnv, "IMPERSONATOR_LISTEN="+addr, "IMPERSONATOR_SHUTDOWN_DRAIN=500ms")
	inImage := func(args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(rootfs, args[0]), args[1:]...)
		cmd.Path = args[0] // resolved inside the chroot
		cmd.Env = imageEnv
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		return cmd
	}
	logs := &strings.Builder{}
	serve := inImage(entry...)
	serve.Stdout, serve.Stderr = logs, logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	defer func() {
		if serve.ProcessState == nil {
			_ = serve.Process.Kill()
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		hcRun := inImage(health...)
		b, err := hcRun.CombinedOutput()
		if err == nil {
			if !strings.Contains(string(b), "/healthz 200") {
				t.Errorf("HEALTHCHECK printed %q", b)
			}
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("HEALTHCHECK never passed: %v %s\n%s", err, b, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("%s = %d %s", path, res.StatusCode, b)
		}
	}
	// The development key it generated belongs to the image's user.
	keys, _ := os.ReadDir(filepath.Join(rootfs, "keys"))
	if len(keys) == 0 {
		t.Error("no key generated in /keys")
	}
	for _, k := range keys {
		fi, _ := k.Info()
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != uint32(uid) {
			t.Errorf("/keys/%s is not owned by uid %d", k.Name(), uid)
		}
	}
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM, want status 0\n%s", err, logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not stop after SIGTERM\n%s", logs)
	}
	if !strings.Contains(logs.String(), `"version":"v0.0.0-deploytest"`) {
		t.Errorf("the build-stage version stamp is not in the log:\n%s", logs)
	}
}

// TestSystemdUnits: the service's unit and the audit shipper's beside it
// pass systemd-analyze verify without a warning (with ExecStart pointed at
// real executables), and their hardening scores as "OK" or better in
// systemd-analyze security.
func TestSystemdUnits(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	if testing.Short() {
		t.Skip("-short: builds the binary, needs systemd-analyze")
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is missing: scripts/test-deps installs systemd")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "impersonator")
	if b, err := exec.Command("go", "build", "-o", bin, "../../cmd/impersonator").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v %s", err, b)
	}
	ship, _ := filepath.Abs(filepath.Join(root, "examples", "impersonator-ship"))
	for _, unit := range []string{"impersonator.service", "impersonator-audit-export.service"} {
		t.Run(unit, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(root, "examples", unit))
			if err != nil {
				t.Fatal(err)
			}
			text := string(b)
			for _, want := range []string{"EnvironmentFile=/etc/impersonator/impersonator.env", "User=impersonator",
				"NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"} {
				if !strings.Contains(text, want) {
					t.Errorf("%s lacks %q", unit, strings.TrimSpace(want))
				}
			}
			text = strings.ReplaceAll(text, "/usr/local/bin/impersonator-ship", ship)
			text = strings.ReplaceAll(text, "/usr/local/bin/impersonator", bin)
			path := filepath.Join(dir, unit)
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
			}
			out, _ = exec.Command("systemd-analyze", "security", "--offline=yes", path).CombinedOutput()
			m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("systemd-analyze security printed no exposure level:\n%s", out)
			}
			if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2.0 {
				t.Errorf("%s exposure level %s %s, want 2.0 or less", unit, m[1], m[2])
			}
			t.Logf("%s: exposure %s %s", unit, m[1], m[2])
		})
	}
}
