// Command gateway is modelgate: an authenticating reverse proxy that gives
// Azure Machine Learning scoring endpoints one stable URL.
//
//	gateway [serve] -config FILE   run the gateway (default subcommand)
//	gateway check -config FILE     validate a config and print the route table
//	gateway keys new [-id NAME]    print a new API key and its sha256 line
//	gateway explain ...            show why a credential is admitted or refused
//	gateway demo                   run a self-contained demo on loopback
//	gateway version                print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "gateway:", err)
		}
		os.Exit(2)
	}
}

// exitError ends the process with a status and no further message (the
// command already printed what went wrong).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const usage = `usage: gateway <command> [flags]

commands:
  serve -config FILE          run the gateway (the default command)
  check -config FILE          validate a configuration and print its route table
  keys new [-id NAME]         print a new API key and the sha256 line for key_sets
  explain -config FILE -path PATH (-token T | -key K) [-host H] [-jwks FILE] [-at TIME]
                              show which rule admits or refuses a credential, and why
  demo [-listen ADDR]         run a self-contained demo on loopback (no Azure account needed)
  version                     print the version

Run "gateway <command> -h" for a command's flags.
`

// run is the whole program behind main, with its inputs and outputs passed
// in so tests can drive it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return cmdServe(ctx, args, stdout, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "keys":
		return cmdKeys(args, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, args, stdout, stderr)
	case "explain":
		return cmdExplain(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "gateway: unknown command %q\n\n%s", cmd, usage)
	return exitError(2)
}
