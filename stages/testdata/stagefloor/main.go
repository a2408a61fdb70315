// Command stagefloor is the least any executor written in Go can do for a
// stage: start, run `bash <script>` in its own process group with the output
// passed through, wait, exit with its code. BenchmarkStageFloor measures it
// beside `ferry run` and bare bash, to show how much of ferry's cost per
// stage is starting a second process at all.
package main

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

func main() {
	c := exec.Command("bash", os.Args[1])
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		os.Exit(ee.ExitCode())
	}
	if err != nil {
		os.Exit(2)
	}
}
