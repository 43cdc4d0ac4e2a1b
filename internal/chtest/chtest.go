// Package chtest runs a throwaway ClickHouse server for tests: Debian's
// clickhouse-server binary, on free loopback ports, with its own data
// directory, stopped when the test ends. Under CI=true a missing server fails
// the test; elsewhere the test is skipped with how to install it.
package chtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Server is a running ClickHouse.
type Server struct {
	Addr   string // host:port of the native protocol
	dir    string
	bin    string
	cmd    *exec.Cmd
	exited chan error
}

const config = `<yandex>
  <logger><level>warning</level><log>%[1]s/server.log</log><errorlog>%[1]s/server.err.log</errorlog></logger>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>%[1]s/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
`

const users = `<yandex>
  <profiles><default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
`

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func binary() (string, error) {
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// Start runs a server for the rest of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binary()
	if err != nil {
		msg := "clickhouse-server not found; install it with: apt-get install clickhouse-server clickhouse-client"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	tcp, http := freePort(t), freePort(t)
	for _, f := range []struct{ name, body string }{
		{"config.xml", fmt.Sprintf(config, dir, tcp, http)},
		{"users.xml", users},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", tcp), dir: dir, bin: bin}
	t.Cleanup(s.Stop)
	s.run(t)
	return s
}

// run starts the server process and waits until it answers.
func (s *Server) run(t testing.TB) {
	t.Helper()
	cmd := exec.Command(s.bin, "--config-file="+filepath.Join(s.dir, "config.xml"))
	cmd.Dir = s.dir
	// The server must not outlive a test that failed or panicked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting clickhouse-server: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan error, 1)
	go func() { s.exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := s.open()
		if err == nil {
			err = conn.Ping(context.Background())
			conn.Close()
			if err == nil {
				return
			}
		}
		select {
		case werr := <-s.exited:
			s.cmd = nil
			log, _ := os.ReadFile(filepath.Join(s.dir, "server.err.log"))
			t.Fatalf("clickhouse-server exited (%v):\n%s", werr, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("clickhouse-server did not answer on %s: %v", s.Addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: no clean shutdown); Restart starts it again
// on the same port and data.
func (s *Server) Stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

// Restart starts a stopped server again.
func (s *Server) Restart(t testing.TB) { s.run(t) }

func (s *Server) open() (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr}, Protocol: clickhouse.Native, DialTimeout: 2 * time.Second})
}

// Conn opens a native-protocol connection closed when the test ends.
func (s *Server) Conn(t testing.TB) driver.Conn {
	t.Helper()
	c, err := s.open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// DSN is the server's address as a clickhouse:// DSN.
func (s *Server) DSN() string { return "clickhouse://" + s.Addr + "/default" }
