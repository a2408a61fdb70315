package cluster

// EtcdAddrs exposes etcd's listeners to the external tests, which check that
// Stop closes them; etcd is an implementation detail of the harness.
func EtcdAddrs(c *Cluster) []string {
	var addrs []string
	for _, u := range append(c.etcd.Config().ListenClientUrls, c.etcd.Config().ListenPeerUrls...) {
		addrs = append(addrs, u.Host)
	}
	return addrs
}
