package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestHtpasswdMakesBcryptEntries(t *testing.T) {
	out, err := run(t, "s3cret pass\n", "htpasswd", "alice")
	if err != nil {
		t.Fatal(err)
	}
	user, hash, ok := strings.Cut(strings.TrimSpace(out), ":")
	if !ok || user != "alice" {
		t.Fatalf("entry %q", out)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("s3cret pass")); err != nil {
		t.Fatalf("not a bcrypt hash of the password: %v", err)
	}

	file := filepath.Join(t.TempDir(), "htpasswd")
	for _, pw := range []string{"one", "two"} {
		if _, err := run(t, pw+"\n", "htpasswd", "--file", file, "bob"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := run(t, "", "htpasswd", "--file", file, "--password", "x", "carol"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("want bob replaced and carol added, got %q", b)
	}
	_, bobHash, _ := strings.Cut(lines[0], ":")
	if bcrypt.CompareHashAndPassword([]byte(bobHash), []byte("two")) != nil {
		t.Fatal("bob's entry was not replaced by the second password")
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if _, err := run(t, "\n", "htpasswd", "dave"); err == nil {
		t.Fatal("empty password accepted")
	}
}

func TestExitCodes(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(bad, []byte("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nberth:\n  nonsense: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want int
	}{
		{[]string{"version"}, 0},
		{[]string{"config", "check"}, 0},
		{[]string{"config", "check", "--config", bad}, 2},
		{[]string{"serve", "--config", bad}, 2},
		{[]string{"serve", "--addr", "0.0.0.0:0"}, 2},
		{[]string{"serve", "--no-such-flag"}, 2},
		{[]string{"no-such-command"}, 2},
	}
	for _, tc := range cases {
		if got := Main(tc.args); got != tc.want {
			t.Errorf("berth %s: exit %d, want %d", strings.Join(tc.args, " "), got, tc.want)
		}
	}
}

func TestConfigPrintRedacts(t *testing.T) {
	f := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(f, []byte("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\nhttp:\n  secret: do-not-print-me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "", "config", "print", "--config", f)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "do-not-print-me") || !strings.Contains(out, "<redacted>") {
		t.Fatalf("output:\n%s", out)
	}
}
