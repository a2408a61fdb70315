// Command ferry-kubectl is the kubectl a job finds on its PATH (its
// bin/kubectl link): ferry's apply and diff of the built-in kinds deploy
// manifests are made of (pkg/kubectl on client-go and pkg/apply) in a
// binary that starts about as fast as a program that only sends the
// requests. It does not link kubectl's command code (k8s.io/kubectl/pkg/cmd),
// client-go's discovery or kustomize: every other verb, flag or kind is
// handed, before anything is printed or sent, to the engine (ferry-engine,
// unpacked beside this binary), which runs the same command with all of
// them. docs/kubectl.md, "Two kubectl binaries".
package main

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"gitlab.com/ferry-ci/ferry/pkg/enginebin"
	"gitlab.com/ferry-ci/ferry/pkg/kubectl"
)

func main() {
	os.Exit(kubectl.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, kubectl.Runtime{Other: toEngine}))
}

// toEngine replaces this process with the engine running `kubectl args...`
// (argv[0] kubectl selects its kubectl); it returns only on failure. When
// the command already read stdin (apply -f - of a custom resource), the
// engine gets what was read, and the rest, as its stdin.
func toEngine(args []string, stdin io.Reader, _, stderr io.Writer) int {
	if stdin != io.Reader(os.Stdin) {
		if err := replaceStdin(stdin); err != nil {
			fmt.Fprintf(stderr, "error: handing stdin to ferry's engine: %v\n", err)
			return 1
		}
	}
	err := enginebin.ExecPartner(append([]string{"kubectl"}, args...))
	fmt.Fprintf(stderr, "error: %v\n", err)
	return 1
}

// replaceStdin makes fd 0 a memory file holding all of r.
func replaceStdin(r io.Reader) error {
	fd, err := unix.MemfdCreate("kubectl-stdin", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "kubectl-stdin")
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	// dup3 clears close-on-exec on the copy.
	return unix.Dup3(fd, 0, 0)
}
