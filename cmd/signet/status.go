package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/signet-dev/signet/server"
)

const defaultAdmin = "127.0.0.1:9091"

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "[--admin HOST:PORT] [--json]",
		"Prints what a running Signet says of itself on its admin listener ("+server.StatusPath+"): whether it\n"+
			"can sign, the JWKS it serves, and every key ring's signing health (and why not), versions,\n"+
			"refreshes and backend health.", stderr)
	admin := fs.String("admin", envOr("SIGNET_ADMIN", defaultAdmin), "Signet admin listener address (env SIGNET_ADMIN)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline for the request")
	asJSON := fs.Bool("json", false, "print the status document as it is")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*admin+server.StatusPath, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("asking %s: %w", *admin, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s%s: %s", *admin, server.StatusPath, resp.Status)
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st server.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("%s%s is not a status document: %w", *admin, server.StatusPath, err)
	}
	return printStatus(stdout, st)
}

func printStatus(w io.Writer, st server.Status) error {
	serving, rings := 0, 0
	for _, r := range st.KeyRings {
		if r.Health != "" {
			rings++
		}
		if r.Health == "SERVING" {
			serving++
		}
	}
	signing := "yes"
	switch {
	case !st.Signing:
		signing = "NO: " + strings.Join(st.SigningProblems, "; ")
	case serving < rings:
		signing = fmt.Sprintf("yes, with %d of %d key rings (see each ring's health)", serving, rings)
	}
	fmt.Fprintf(w, "issuer:   %s\nsigning:  %s\n", st.Issuer, signing)
	if st.AuditProblem != "" {
		fmt.Fprintf(w, "audit:    CANNOT BE WRITTEN, every Sign and Rotate is refused: %s\n", st.AuditProblem)
	}
	fmt.Fprintf(w, "jwks:     %d keys, etag %s\n", st.JWKS.Keys, st.JWKS.ETag)
	for _, r := range st.KeyRings {
		kind := r.Algorithm
		if r.Usage == "ca" {
			kind += ", CA ring: issues certificates, never signs tokens"
		}
		fmt.Fprintf(w, "\nkey ring %s (%s): active %s\n", r.Name, kind, orDash(r.ActiveKid))
		switch {
		case r.Health == "SERVING":
			fmt.Fprintf(w, "  health SERVING\n")
		case r.Health != "":
			fmt.Fprintf(w, "  health %s: %s\n", r.Health, strings.Join(r.SigningProblems, "; "))
		case len(r.SigningProblems) > 0:
			fmt.Fprintf(w, "  problems: %s\n", strings.Join(r.SigningProblems, "; "))
		}
		fmt.Fprintf(w, "  last refresh %s, failed refreshes since: %d", formatStatusTime(r.LastRefresh), r.RefreshFailures)
		if r.LastError != "" {
			fmt.Fprintf(w, " (last: %s)", r.LastError)
		}
		fmt.Fprintln(w)
		if r.BackendDown != nil {
			fmt.Fprintf(w, "  backend DOWN since %s\n", formatStatusTime(r.BackendDown))
		}
		if r.NextRotation != nil {
			fmt.Fprintf(w, "  next scheduled rotation %s\n", formatStatusTime(r.NextRotation))
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  KID\tBACKEND ID\tSTATE\tCREATED\tACTIVATES\tRETIRES")
		for _, v := range r.Versions {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", orDash(v.Kid), v.BackendID, v.State, formatStatusTime(&v.Created),
				formatStatusTime(v.ActivatesAt), formatStatusTime(v.RetiresAt))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, v := range r.Versions {
			switch {
			case v.Withheld:
				fmt.Fprintf(w, "  %s WITHHELD (neither published nor signing): %s\n", v.Kid, v.CertificateProblem)
			case v.CertificateProblem != "":
				fmt.Fprintf(w, "  %s certificate: %s\n", v.Kid, v.CertificateProblem)
			case v.CertificateNotAfter != nil:
				fmt.Fprintf(w, "  %s certificate %s, not after %s\n", v.Kid, v.CertificateSubject, formatStatusTime(v.CertificateNotAfter))
			}
		}
	}
	return nil
}

func formatStatusTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
