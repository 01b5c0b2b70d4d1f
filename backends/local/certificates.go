package local

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/signet-dev/signet/backends"
)

// Certificate chains live beside the key file: <version>.x5c.<generation>,
// PEM, the version's certificate first. Each new chain of a version (the
// first, a renewal) is written as the next generation with the same
// exclusive link as a version file, so two replicas racing to attach a
// chain keep exactly one: the second link fails and its writer reads the
// winner's. The highest generation is the one in force. An older one is
// removed by whoever reads the directory once the newer one is older than
// the recovery grace, so that a replica that listed the directory just
// before a renewal can still read the generation it saw.

const chainInfix = ".x5c."

// chainName is the file name of a version's chain of one generation.
func chainName(id string, gen uint64) string {
	return id + chainInfix + strconv.FormatUint(gen, 10)
}

// parseChainName splits a chain file name into version and generation.
func parseChainName(name string) (id string, gen uint64, ok bool) {
	id, g, found := strings.Cut(name, chainInfix)
	if !found {
		return "", 0, false
	}
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", 0, false
	}
	gen, err := strconv.ParseUint(g, 10, 64)
	return id, gen, err == nil
}

// newestChains maps each version in a directory listing to its newest
// chain generation.
func newestChains(des []os.DirEntry) map[string]uint64 {
	newest := map[string]uint64{}
	for _, de := range des {
		if id, gen, ok := parseChainName(de.Name()); ok && gen > newest[id] {
			newest[id] = gen
		}
	}
	return newest
}

// chainsInForce reads the chain in force of each version in a ring's
// directory listing, listing again if a generation it saw was removed
// meanwhile. A chain file that cannot be decoded is that version's problem
// (problems), not the ring's: the other versions are read.
func (s *Store) chainsInForce(dir string, des []os.DirEntry) (chains map[string][][]byte, problems map[string]string, err error) {
	for attempt := 0; ; attempt++ {
		chains, problems = map[string][][]byte{}, map[string]string{}
		newest := newestChains(des)
		err = nil
		for id, gen := range newest {
			chain, rerr := readChain(filepath.Join(dir, chainName(id, gen)))
			switch {
			case errors.Is(rerr, fs.ErrNotExist):
				err = rerr
			case backends.KindOf(rerr) == backends.KindFailedPrecondition:
				problems[id] = rerr.Error()
			case rerr != nil:
				return nil, nil, rerr
			default:
				chains[id] = chain
			}
		}
		if err == nil {
			s.removeSuperseded(dir, des, newest)
			return chains, problems, nil
		}
		if attempt == 2 {
			return nil, nil, err
		}
		if des, err = os.ReadDir(dir); err != nil {
			return nil, nil, errorf(backends.KindUnavailable, "reading %s: %w", dir, err)
		}
	}
}

// removeSuperseded removes the chain generations older than the newest of
// their version, once the newest is older than the recovery grace.
func (s *Store) removeSuperseded(dir string, des []os.DirEntry, newest map[string]uint64) {
	settled := map[string]bool{}
	for _, de := range des {
		if id, gen, ok := parseChainName(de.Name()); ok && gen == newest[id] {
			info, err := de.Info()
			settled[id] = err == nil && s.now().Sub(info.ModTime()) > s.opts.Grace()
		}
	}
	for _, de := range des {
		if id, gen, ok := parseChainName(de.Name()); ok && gen < newest[id] && settled[id] {
			_ = os.Remove(filepath.Join(dir, de.Name())) // #nosec G703 -- a file of the key directory, named by the pattern above
		}
	}
}

func readChain(path string) ([][]byte, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- under the key directory, named by chainName
	if err != nil {
		return nil, errorf(backends.KindUnavailable, "reading %s: %w", path, err)
	}
	chain, err := backends.DecodePEMChain(data)
	if err != nil {
		return nil, errorf(backends.KindFailedPrecondition, "certificate chain %s: %v", path, err)
	}
	if len(chain) == 0 {
		return nil, errorf(backends.KindFailedPrecondition, "certificate chain %s holds no certificate", path)
	}
	return chain, nil
}

// PutCertificates stores chain as the version's certificate chain if the
// chain in force is old, as the next generation, created exclusively.
func (s *Store) PutCertificates(ctx context.Context, ring backends.KeyRing, versionID string, old, chain [][]byte) ([][]byte, error) {
	if len(chain) == 0 {
		return nil, errorf(backends.KindInvalidArgument, "an empty certificate chain")
	}
	if _, err := s.entry(ring, versionID); err != nil {
		return nil, err
	}
	for range 3 {
		dir, des, _, err := s.readRingDir(ctx, ring)
		if err != nil {
			return nil, err
		}
		var gen uint64
		for _, de := range des {
			if id, g, ok := parseChainName(de.Name()); ok && id == versionID && g > gen {
				gen = g
			}
		}
		var cur [][]byte
		if gen > 0 {
			cur, err = readChain(filepath.Join(dir, chainName(versionID, gen)))
			switch {
			case errors.Is(err, fs.ErrNotExist):
				continue // replaced and removed under us: read again
			case backends.KindOf(err) == backends.KindFailedPrecondition:
				cur = nil // unreadable: as good as none, and replaced like none
			case err != nil:
				return nil, err
			}
		}
		if !backends.SameChain(cur, old) {
			return cur, nil
		}
		err = writeFileExclusive(ctx, filepath.Join(dir, chainName(versionID, gen+1)), backends.EncodePEMChain(chain))
		if errors.Is(err, fs.ErrExist) {
			continue // another writer was first: return what it stored
		}
		if err != nil {
			return nil, errorf(backends.KindUnavailable, "writing the certificate chain of version %s: %w", versionID, err)
		}
		return chain, nil // the superseded generation goes after the grace (removeSuperseded)
	}
	return nil, errorf(backends.KindConflict, "the certificate chain of version %s of key ring %q keeps changing", versionID, ring.Name)
}

var _ backends.CertificateStore = (*Store)(nil)
