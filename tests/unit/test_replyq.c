/*
 * test_replyq.c - the reply queue fed request and reply sequences as a
 * server would answer them: what reaches the client, in which order, and
 * what pgbun answers itself.
 */
#include <stdio.h>
#include <string.h>

#include "replyq.h"
#include "tap.h"

static char out[1024]; /* what the client got, one letter per message: server replies and pgbun's own */

static bool emit(const struct replyq_entry *e, void *arg)
{
    (void)arg;
    strncat(out, (char[]){'+', e->action == REPLYQ_SUBST ? '!' : e->synth, '\0'}, sizeof(out) - strlen(out) - 1);
    return true;
}

/* A Parse that named or prepared a statement took effect, or did not (~ or x). */
static void settle(const struct replyq_entry *e, bool ok, void *arg)
{
    (void)arg;
    if (!ok) strncat(out, e->adds_name ? "~" : "x", sizeof(out) - strlen(out) - 1);
}

/*
 * Runs a script: "p" a request (P B D E C S Q F) the client sent, passed;
 * "d" one pgbun sent for itself; "y1" / "y3" one pgbun answers with '1' /
 * '3'; "n" + a type: a client Parse that adds a name (PASS), "u" + a
 * type: a request that fails on purpose for pgbun's own error (SUBST);
 * "<" then a server reply. Returns what the client saw: replies, "+1"
 * for pgbun's own, "+!" for its error, "~" / "x" for a Parse (client's /
 * pgbun's) undone.
 */
static const char *run(const char *script)
{
    struct reply_queue q;

    replyq_init(&q, emit, settle, NULL);
    out[0] = '\0';
    for (const char *p = script; *p; p += 2) {
        bool fine = true;

        switch (p[0]) {
        case 'p': fine = replyq_push_simple(&q, p[1], REPLYQ_PASS); break;
        case 'd': {
            struct replyq_entry e = {.type = p[1], .action = REPLYQ_DROP, .id = p[1] == 'P' ? 7 : 0};

            fine = replyq_push(&q, &e);
            break;
        }
        case 'n': {
            struct replyq_entry e = {.type = p[1], .action = REPLYQ_PASS, .adds_name = true, .name = strdup("s1")};

            fine = replyq_push(&q, &e);
            break;
        }
        case 'u': {
            struct replyq_entry e = {.type = p[1], .action = REPLYQ_SUBST, .name = strdup("s1")};

            fine = replyq_push(&q, &e);
            break;
        }
        case 'y': {
            struct replyq_entry e = {.type = p[2], .action = REPLYQ_SYNTH, .synth = p[1], .adds_name = p[2] == 'P'};

            fine = replyq_push(&q, &e);
            p++;
            break;
        }
        case '<':
            if (replyq_reply(&q, p[1])) strncat(out, (char[]){p[1], '\0'}, sizeof(out) - strlen(out) - 1);
            replyq_answer_due(&q);
            break;
        case '!': replyq_copy_in(&q, p[1] - '0'); break;
        }
        if (!fine) return "(out of memory)";
    }
    if (!replyq_empty(&q)) strncat(out, " (left)", sizeof(out) - strlen(out) - 1);
    replyq_deinit(&q);
    return out;
}

static void sees(const char *script, const char *want, const char *what)
{
    is_str(run(script), want, "%s: %s", what, script);
}

int main(void)
{
    sees("pPpBpEpS<1<2<D<C<Z", "12DCZ", "a pipeline passes whole");
    sees("pQ<T<D<C<Z", "TDCZ", "a simple query ends at Z");
    sees("pQ<E<Z", "EZ", "an error inside a simple query ends nothing");
    sees("pQpQ<C<Z<C<Z", "CZCZ", "two simple queries");
    sees("y1PpBpEpS<2<C<Z", "+12CZ", "a Parse answered by pgbun, nothing before it: at once");
    sees("pSy1PpBpEpS<Z<2<C<Z", "Z+12CZ", "a Parse answered by pgbun waits for the replies before it");
    sees("dPpBpEpS<1<2<C<Z", "2CZ", "the reply to pgbun's own Parse is hidden");
    sees("pPy3CpS<1<Z", "1+3Z", "a Close answered in its turn");
    sees("pPpBpEpS<E<Z", "EZ", "an error skips to the Sync");
    sees("pPy3CpS<E<Z", "EZ", "a Close after an error gets no answer, as from PostgreSQL");
    sees("dPpBpEpS<E<Z", "xEZ", "an error of pgbun's own Parse reaches the client, whose Bind it failed; undone");
    sees("nPpS<1<Z", "1Z", "a client's Parse that succeeds is not undone");
    sees("nPpS<E<Z", "~EZ", "a client's Parse that fails is undone");
    sees("pBnPy1PpS<E<Z", "~~EZ", "Parses skipped after an error are undone, answered by pgbun or not");
    sees("pB<EnPpS<Z", "E~Z", "a Parse sent after the error came is undone at once");
    sees("pPuDpBpS<1<E<Z", "1+!Z", "a request failed on purpose: pgbun's error replaces the server's");
    sees("pPuDpS<E<Z", "EZ", "... unless an earlier error skipped it");
    sees("y1PuDnPpS<E<Z", "+1+!~Z", "... and what follows it is skipped");
    sees("dQ<C<Z", "", "pgbun's own query is hidden whole");
    sees("dQ<N<C<Z", "", "a notice to pgbun's own query is hidden");
    sees("pQ<N<C<Z", "NCZ", "a notice to the client's query passes");
    sees("dQ<A<S<C<Z", "AS", "notifications and parameter changes always pass");
    sees("pPpB<E", "E", "an error before the Sync was sent: nothing due, requests skipped until it");
    sees("pPpB<EpEy3CpS<Z", "EZ", "requests after the error, before the Sync, get nothing");
    sees("pPpB<EpEpSpQ<Z<C<Z", "EZCZ", "after the Sync the queue answers again");
    sees("pDpS<t<T<Z", "tTZ", "Describe of a statement ends at its RowDescription");
    sees("pDpS<t<n<Z", "tnZ", "... or NoData");
    sees("pBpDpEpS<2<T<D<s<Z", "2TDsZ", "a portal described, executed, suspended");
    sees("pEpS<I<Z", "IZ", "an empty query");
    sees("pFpS<V<Z<Z", "VZZ", "a function call ends at its Z");
    sees("pEpSpS<G!2<C", "GC", "COPY FROM STDIN: the Syncs behind the Execute are ignored");
    sees("pEpSpS<G!2<CpS<Z", "GCZ", "... and the client's Sync after CopyDone ends it");
    sees("pEpS<H<d<c<C<Z", "HdcCZ", "COPY TO STDOUT");
    sees("<Z", "Z", "a reply with nothing due passes (the caller judges)");
    {
        char big[2048] = "";

        for (int i = 0; i < 300; i++)
            strcat(big, "pP");
        for (int i = 0; i < 300; i++)
            strcat(big, "<1");
        ok(strspn(run(big), "1") == 300 && out[300] == '\0', "300 requests in flight: the ring grows");
    }
    return done_testing();
}
