// Command walletsync is the one binary of the pipeline; each subcommand is a
// role or a tool. `walletsync help` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// env is the process environment a command sees: streams and variables are
// passed in, not taken from globals, so tests run commands in process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// ready, when set, learns the HTTP address a role listens on (tests
	// start roles on port 0).
	ready func(net.Addr)
}

type command struct {
	name    string
	args    string // the positional arguments, for usage lines
	summary string
	help    string // paragraphs after the usage line
	flags   func(fs *flag.FlagSet) func(ctx context.Context, e env, args []string) int
}

func commands() []command {
	return []command{foldCommand(), runRoleCommand(), ingestCommand(), processCommand(), queryCommand(), sinkCommand(), backfillCommand(), simulateCommand(), benchCommand(), replayCommand(), migrateCommand()}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(code)
}

// Exit codes shared by every subcommand.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			usage(e.stdout)
			return exitOK
		}
		name, rest = rest[0], []string{"-h"}
	}
	for _, c := range commands() {
		if c.name == name {
			return runCommand(ctx, c, rest, e)
		}
	}
	fmt.Fprintf(e.stderr, "walletsync: unknown command %q\n\n", name)
	usage(e.stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `walletsync turns Apple Wallet and Google Wallet pass install/uninstall events
into one reconciled walletStatus per customer.

Usage:
  walletsync <command> [flags] [arguments]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run "walletsync help <command>" or "walletsync <command> -h" for its flags.
Every flag --name can also be set with the environment variable
WALLETSYNC_NAME (upper case, dashes as underscores); a flag on the command
line wins over the environment.
`)
}

// envName is the environment variable that sets a flag.
func envName(flagName string) string {
	return "WALLETSYNC_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func runCommand(ctx context.Context, c command, args []string, e env) int {
	fs := flag.NewFlagSet("walletsync "+c.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	runFn := c.flags(fs)
	fs.Usage = func() { commandUsage(fs.Output(), c, fs) }
	// The environment is applied first so that the command line wins.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := e.getenv(envName(f.Name)); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s: %w", envName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintf(e.stderr, "walletsync %s: %v\n", c.name, envErr)
		return exitUsage
	}
	// Asked-for help goes to standard output, once; the flag package would
	// print it to the error output itself.
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			fs.SetOutput(e.stdout)
			fs.Usage()
			return exitOK
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	return runFn(ctx, e, fs.Args())
}

func commandUsage(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: walletsync %s [flags] %s\n\n%s\n", c.name, c.args, strings.TrimSpace(c.help))
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	fmt.Fprint(w, "\nFlags:\n")
	for _, n := range names {
		f := fs.Lookup(n)
		typ, text := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", n)
		if typ != "" {
			fmt.Fprintf(w, " %s", typ)
		}
		fmt.Fprintf(w, "\n      %s", text)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "\n      env %s\n", envName(n))
	}
}

// usageError is a setup error caused by a flag's value: exit code 2, like
// a flag that does not parse. Every other setup error (a client that cannot
// be built, a port in use) exits 1.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// flagErrorf is fmt.Errorf for an error in a flag's value.
func flagErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}
