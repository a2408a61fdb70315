// Command floor is the physical floor of the seed apply for make bench: a
// fresh process that loads the kubeconfig ($KUBECONFIG) and sends one
// server-side apply PATCH per argument, all at once, and nothing else (no
// discovery, no parsing: each argument is "<API path>=<file of the JSON
// body>", prepared in advance).
package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		fail(err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		fail(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(os.Args)-1)
	for i, arg := range os.Args[1:] {
		path, file, ok := strings.Cut(arg, "=")
		if !ok {
			fail(fmt.Errorf("argument %q: want <path>=<file>", arg))
		}
		body, err := os.ReadFile(file)
		if err != nil {
			fail(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest(http.MethodPatch, strings.TrimSuffix(cfg.Host, "/")+path+"?fieldManager=floor", bytes.NewReader(body))
			if err != nil {
				errs[i] = err
				return
			}
			req.Header.Set("Content-Type", "application/apply-patch+yaml")
			resp, err := hc.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				errs[i] = fmt.Errorf("%s: %s: %s", path, resp.Status, b)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "floor:", err)
	os.Exit(1)
}
