// JDBC server-side prepared statements through pgbun in transaction mode, run as a single source file:
//   java -cp /usr/share/java/postgresql.jar JdbcPrepared.java <jdbc-url> <user> <password> [threads] [seconds] [tag]
// The url should carry prepareThreshold=1: the driver then uses named statements (S_1, S_2, ...) from
// the first execution. Each thread has its own Connection and, for the given seconds, runs
// PreparedStatements with parameters, a batch, and transactions (setAutoCommit(false) ... commit())
// of inserts into drv_rows (tag <tag>-<thread>) checking the thread's own rows. Thread k prepares its
// statements in an order rotated by k, so the driver's names S_n stand for different texts on
// different connections. Prints key=value lines for the pytest side (test_drivers.py); exits non-zero
// on any error or wrong result.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

public class JdbcPrepared {
    static final String[] SQL = {
        "SELECT ?::int * 3",
        "SELECT ?::text || ?::text",
        "SELECT pg_backend_pid()",
        "INSERT INTO drv_rows (tag, n) VALUES (?, ?)",
        "SELECT count(*), coalesce(sum(n), 0) FROM drv_rows WHERE tag = ?",
    };
    static final int TRIPLE = 0, CONCAT = 1, PID = 2, INSERT = 3, OWN = 4;

    static class Result {
        long executions, transactions;
        Set<Integer> pids = new HashSet<>();
    }

    static void check(String what, Object got, Object want) {
        if (!got.equals(want)) throw new IllegalStateException(what + ": got " + got + ", expected " + want);
    }

    static long one(PreparedStatement ps, int column) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            if (!rs.next()) throw new IllegalStateException("no row for " + ps);
            return rs.getLong(column);
        }
    }

    static Result work(String url, Properties props, int k, long deadline, String tag) throws Exception {
        Result r = new Result();
        try (Connection conn = DriverManager.getConnection(url, props)) {
            PreparedStatement[] ps = new PreparedStatement[SQL.length];
            for (int j = 0; j < SQL.length; j++) {
                int which = (j + k) % SQL.length;
                ps[which] = conn.prepareStatement(SQL[which]);
            }
            long rows = 0, sum = 0;
            for (int i = 1; System.nanoTime() < deadline; i++) {
                ps[TRIPLE].setInt(1, i);
                check("triple", one(ps[TRIPLE], 1), 3L * i);
                ps[CONCAT].setString(1, tag);
                ps[CONCAT].setString(2, Integer.toString(i));
                try (ResultSet rs = ps[CONCAT].executeQuery()) {
                    rs.next();
                    check("concat", rs.getString(1), tag + i);
                }
                r.pids.add((int) one(ps[PID], 1));
                r.executions += 3;
                if (i % 10 == 0) {
                    // A new PreparedStatement of a known text: the driver reuses its server-side name.
                    try (PreparedStatement again = conn.prepareStatement(SQL[TRIPLE])) {
                        again.setInt(1, -i);
                        check("triple again", one(again, 1), -3L * i);
                    }
                    r.executions += 1;
                }
                if (i % 3 == 0) {
                    conn.setAutoCommit(false);
                    ps[INSERT].setString(1, tag);
                    ps[INSERT].setInt(2, i);
                    check("insert", ps[INSERT].executeUpdate(), 1);
                    for (int b = 1; b <= 2; b++) { // a batch: Bind/Execute twice, then one Sync
                        ps[INSERT].setString(1, tag);
                        ps[INSERT].setInt(2, b);
                        ps[INSERT].addBatch();
                    }
                    ps[INSERT].executeBatch();
                    rows += 3;
                    sum += i + 3;
                    ps[OWN].setString(1, tag);
                    try (ResultSet rs = ps[OWN].executeQuery()) {
                        rs.next();
                        check("own rows", rs.getLong(1) + "/" + rs.getLong(2), rows + "/" + sum);
                    }
                    conn.commit();
                    conn.setAutoCommit(true);
                    r.executions += 3;
                    r.transactions += 1;
                }
            }
            for (PreparedStatement p : ps) p.close();
        }
        return r;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: JdbcPrepared <jdbc-url> <user> <password> [threads] [seconds] [tag]");
            System.exit(2);
        }
        int threads = args.length > 3 ? Integer.parseInt(args[3]) : 12;
        double seconds = args.length > 4 ? Double.parseDouble(args[4]) : 4;
        String tag = args.length > 5 ? args[5] : "jdbc-" + System.nanoTime();
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "30");

        long deadline = System.nanoTime() + (long) (seconds * 1e9);
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        List<Future<Result>> futures = new ArrayList<>();
        for (int k = 0; k < threads; k++) {
            final int kk = k;
            futures.add(pool.submit(() -> work(args[0], props, kk, deadline, tag + "-" + kk)));
        }
        pool.shutdown();
        long executions = 0, transactions = 0;
        int moved = 0, errors = 0;
        Set<Integer> backends = new TreeSet<>();
        for (int k = 0; k < threads; k++) {
            try {
                Result r = futures.get(k).get(60, TimeUnit.SECONDS);
                executions += r.executions;
                transactions += r.transactions;
                backends.addAll(r.pids);
                if (r.pids.size() > 1) moved++;
            } catch (Exception e) {
                errors++;
                Throwable cause = e.getCause() != null ? e.getCause() : e;
                System.out.println("error=thread " + k + ": " + cause);
            }
        }
        System.out.println("threads=" + threads);
        System.out.println("executions=" + executions);
        System.out.println("transactions=" + transactions);
        System.out.println("moved_threads=" + moved);
        System.out.println("backends=" + String.join(",", backends.stream().map(String::valueOf).toList()));
        System.out.println("errors=" + errors);
        System.exit(errors == 0 ? 0 : 1);
    }
}
