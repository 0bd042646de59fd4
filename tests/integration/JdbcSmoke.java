// A JDBC smoke test for pgbun, run as a single source file:
//   java -cp /usr/share/java/postgresql.jar JdbcSmoke.java <jdbc-url> <user> <password>
// Prints key=value lines the pytest side checks; exits non-zero on any error.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Properties;

public class JdbcSmoke {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: JdbcSmoke <jdbc-url> <user> <password>");
            System.exit(2);
        }
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "30");
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery(
                     "SELECT 1 + 1, current_setting('search_path'), current_user, "
                     + "current_setting('extra_float_digits')")) {
                rs.next();
                System.out.println("sum=" + rs.getInt(1));
                System.out.println("search_path=" + rs.getString(2));
                System.out.println("user=" + rs.getString(3));
                System.out.println("extra_float_digits=" + rs.getString(4));
            }
            // Past prepareThreshold (5) the driver switches to named server-side statements.
            long total = 0;
            try (PreparedStatement ps = conn.prepareStatement("SELECT count(*) FROM users WHERE id <= ?")) {
                for (int i = 1; i <= 8; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        total += rs.getLong(1);
                    }
                }
            }
            System.out.println("prepared_total=" + total);
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("INSERT INTO txn_log (client_id, amount, note) VALUES (-1, 1.5, 'jdbc')");
            }
            conn.rollback();
            System.out.println("transaction=ok");
        }
    }
}
