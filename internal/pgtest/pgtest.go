// Package pgtest starts throwaway PostgreSQL servers for tests that need
// server-wide settings the shared server must keep (wal_level=logical for
// logical replication), or that stop or kill the server.
//
// A server runs from a fresh initdb in a temporary directory, on a free
// loopback port, with its Unix socket in that directory and fsync off. Where
// the test runs as root (PostgreSQL refuses to), the server runs as the
// postgres user and the directory is made its own. Where nothing of that
// can work (no binaries, no postgres user), Start skips the test and says
// why; New returns an error wrapping ErrUnavailable.
package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// BinEnv names a directory holding initdb and postgres; without it pgtest
// looks in /usr/lib/postgresql/<newest>/bin, then on PATH.
const BinEnv = "PGTEST_BIN"

// ErrUnavailable is wrapped by the error New returns when no server can be
// started here (no binaries, no user to run them as).
var ErrUnavailable = errors.New("pgtest: cannot start a PostgreSQL server here")

// Logical are the settings logical replication needs, with room for the
// slots and senders of several tests.
var Logical = []string{"wal_level=logical", "max_wal_senders=20", "max_replication_slots=20"}

// Server is a running PostgreSQL.
type Server struct {
	Port int    // loopback TCP port
	Dir  string // data directory and socket directory live here

	cmd      *exec.Cmd
	exited   chan struct{}
	stopOnce sync.Once
}

// Start runs a server with the given settings ("name=value", as for
// postgres -c) plus fsync=off, and stops it when the test ends. It skips
// the test where no server can be started.
func Start(t testing.TB, settings ...string) *Server {
	t.Helper()
	s, err := New(settings...)
	if errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// New runs a server as Start does; the caller stops it (for a server shared
// by a package's tests, from TestMain).
func New(settings ...string) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, owner, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	if owner != nil {
		if err := os.Chown(dir, owner[0], owner[1]); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("%w: chown %s to postgres: %v", ErrUnavailable, dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: initdb: %v\n%s", ErrUnavailable, err, out)
	}
	for attempt := 1; ; attempt++ {
		s, err := startOnce(bin, dir, data, cred, settings)
		if err == nil {
			return s, nil
		}
		if attempt == 5 {
			os.RemoveAll(dir)
			return nil, err
		}
		// The free port was taken before the server bound it: another one.
	}
}

func startOnce(bin, dir, data string, cred *syscall.Credential, settings []string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "log_min_messages=warning", "-c", "logging_collector=off"}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	// Pdeathsig: a test binary that dies (a panic, a timeout) takes its
	// server with it; SIGQUIT is PostgreSQL's immediate shutdown.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	s := &Server{Port: port, Dir: dir, cmd: cmd, exited: make(chan struct{})}
	ready := make(chan struct{})
	var tail strings.Builder
	var tailMu sync.Mutex
	go func() {
		// Wait for the server to say it accepts connections; drain the
		// rest so that it never blocks on a full pipe.
		sc := bufio.NewScanner(errPipe)
		said := false
		for sc.Scan() {
			line := sc.Text()
			if !said {
				tailMu.Lock()
				tail.WriteString(line + "\n")
				tailMu.Unlock()
				if strings.Contains(line, "ready to accept connections") {
					said = true
					close(ready)
				}
			}
		}
		cmd.Wait()
		close(s.exited)
	}()
	select {
	case <-ready:
	case <-s.exited:
		tailMu.Lock()
		defer tailMu.Unlock()
		return nil, fmt.Errorf("pgtest: postgres %v exited before it was ready:\n%s", args, tail.String())
	case <-time.After(60 * time.Second):
		s.kill()
		return nil, fmt.Errorf("pgtest: postgres %v was not ready within 60s", args)
	}
	// It said ready; make sure TCP answers too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		s.kill()
		return nil, fmt.Errorf("pgtest: connect to the new server: %w", err)
	}
	c.Close(ctx)
	return s, nil
}

// DSN is a libpq connection string for database db on the server.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", s.Port, db)
}

// CreateDatabase creates a database named after the test (made unique) and
// returns its DSN; each test gets its own, so their slots and publications
// never meet.
func (s *Server) CreateDatabase(t testing.TB) string {
	t.Helper()
	name := dbName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name).ReadAll(); err != nil {
		t.Fatal(err)
	}
	return s.DSN(name)
}

var dbSeq struct {
	sync.Mutex
	n int
}

func dbName(test string) string {
	dbSeq.Lock()
	dbSeq.n++
	n := dbSeq.n
	dbSeq.Unlock()
	var b strings.Builder
	for _, r := range strings.ToLower(test) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > 40 {
		name = name[:40]
	}
	return fmt.Sprintf("t_%s_%d", name, n)
}

// Stop shuts the server down (fast shutdown: sessions are ended) and
// removes its directory.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			s.kill()
		}
		os.RemoveAll(s.Dir)
	})
}

// kill ends the server and its children at once.
func (s *Server) kill() {
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// binDir finds initdb and postgres.
func binDir() (string, error) {
	if d := os.Getenv(BinEnv); d != "" {
		return d, nil
	}
	if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
		sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
				return d, nil
			}
		}
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", fmt.Errorf("%w: no initdb in /usr/lib/postgresql/*/bin or on PATH (set %s)", ErrUnavailable, BinEnv)
	}
	return filepath.Dir(p), nil
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// runAs returns the credential to run the server with: none for a non-root
// user, else the postgres user's, with its uid and gid to own the directory.
func runAs() (*syscall.Credential, []int, error) {
	if os.Geteuid() != 0 {
		return nil, nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, nil, fmt.Errorf("%w: running as root and there is no postgres user to run the server as: %v", ErrUnavailable, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, nil, fmt.Errorf("%w: postgres user has uid %q gid %q", ErrUnavailable, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, []int{uid, gid}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
