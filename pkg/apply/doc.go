// Package apply is ferry's server-side apply engine: it reads manifests the
// way kubectl does and applies them with server-side apply, in stages, a few
// objects at a time, printing kubectl's words.
//
// # Reading
//
//	objs, err := apply.ReadManifests(apply.ReadOptions{
//		Filenames: []string{"k8s/", "-"}, Recursive: true, Stdin: os.Stdin,
//		Kustomize: []string{"overlays/prod"},
//		Envsubst:  jobVars, // func(name string) (string, bool), or nil
//	})
//
// Files, directories (.yaml/.yml/.json; -R descends), "-" for stdin (source
// "STDIN"), kustomization directories (krusty on the disk). YAML streams
// ("---") and JSON streams, List kinds expanded, empty documents skipped.
// Every *Object keeps Source and Line. Errors are *ManifestError,
// "<file>:<line>: <message>", several joined with errors.Join (one per
// line); the CLI prints each as "error: <line>". Parse(source, data,
// envsubst) parses one manifest.
//
// Envsubst replaces ${NAME} (braces required; $NAME is left alone because
// manifests embed shell scripts and configs; "$${NAME}" gives a literal
// "${NAME}"; comment lines are left alone). An unset variable is an error
// naming it, the file and the line. It replaces the seeds' `sed -i
// "s|IMAGE|${IMAGE}|g" deployment.yml`, which keeps working (it is sed).
//
// # Applying
//
//	a, err := apply.NewApplier(restConfig, apply.Options{
//		// nil: built-in kinds only (the job's small kubectl)
//		Discovery: kubediscovery.Cached(filepath.Join(stateRoot, "cache", "discovery")),
//	})
//	res, err := a.Apply(ctx, objs, apply.ApplyOptions{
//		Namespace: ns, NamespaceExplicit: nsFlagGiven,
//		FieldManager: "", Force: false, DryRun: apply.DryRunNone,
//		Annotations: apply.TraceAnnotations(jobVars, false),
//		Out: stdout, ErrOut: stderr,
//	})
//	// err: the whole run failed (context); res.Err() != nil: some object failed -> exit 1
//
// Stages: (1) CRDs, Namespaces and cluster-scoped kinds (ClusterRoles, ...;
// not webhook configurations or APIServices), then the CRDs are waited for
// until Established and the REST mapper is reset; (2) *Class kinds; (3) the
// rest, including custom resources of the CRDs from stage 1, whatever the
// file order. Within a stage Options.Concurrency objects (default 8) are in
// flight; lines are printed in input order.
//
// Each object is one PATCH application/apply-patch+yaml, field manager
// "ferry" unless overridden. Output words are kubectl's client-side ones
// (created, configured, unchanged), not "serverside-applied": "created"
// from the API server's 201 answer; "unchanged" when the resourceVersion
// before (one metadata GET, or one metadata LIST per resource and namespace
// when 4 or more objects share them) equals the one returned. DryRunClient
// writes nothing and prints "created|configured (dry run)"; DryRunServer
// prints "... (server dry run)".
//
// Every object is attempted; failures are printed like kubectl
// ("Error from server (Forbidden): error when applying "f.yaml:1": ...",
// "error: resource mapping not found for name: ... ensure CRDs are
// installed first", the namespace mismatch refusal, conflicts with who owns
// which field and the --force-conflicts / --field-manager way out).
//
// # Waiting, diffing
//
//	err = a.Wait(ctx, objs, 5*time.Minute, stdout)  // kstatus; timeout names object and message
//	dr, err := a.Diff(ctx, objs, apply.DiffOptions{Out: stdout, ErrOut: stderr}) // dr.Changed -> exit 1
//
// The ~28 built-in kinds deploy manifests are made of are mapped without
// discovery (builtinMappings); any other kind goes through Options.Discovery
// (pkg/kubediscovery: cached on disk per API server, 0700, TTL 6h; a kind it
// does not know refreshes it once), and without one Mappable reports false.
// Mapper(), Mapping() and Dynamic() expose the clients for the CLI's other
// verbs.
//
// See docs/apply.md for the behaviour in full and the differences from kubectl.
package apply
