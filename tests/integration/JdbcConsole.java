// Reads the admin console through JDBC: SHOW POOLS and SHOW STATS by a plain
// Statement and by a server-prepared statement (binary results forced), printing
// "name=value" lines the test checks. Run with java -cp postgresql.jar JdbcConsole.java URL USER PASSWORD.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.Statement;
import java.util.Properties;

public class JdbcConsole {
    static String columns(ResultSetMetaData md) throws Exception {
        StringBuilder sb = new StringBuilder();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            if (i > 1) sb.append(',');
            sb.append(md.getColumnName(i)).append(':').append(md.getColumnTypeName(i));
        }
        return sb.toString();
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("prepareThreshold", "1");   // server-side statements at once
        props.setProperty("binaryTransfer", "true");
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SHOW POOLS")) {
                System.out.println("pools_columns=" + columns(rs.getMetaData()));
                int rows = 0;
                while (rs.next()) {
                    rows++;
                    if (rs.getString("database").equals("pgbun")) {
                        System.out.println("console_cl_active=" + rs.getLong("cl_active"));
                        System.out.println("console_reuse=" + rs.getBigDecimal("reuse_efficiency_percent"));
                    }
                }
                System.out.println("pools_rows=" + rows);
            }
            for (int round = 0; round < 3; round++) {
                try (PreparedStatement ps = conn.prepareStatement("show stats;"); ResultSet rs = ps.executeQuery()) {
                    System.out.println("stats_columns=" + columns(rs.getMetaData()));
                    while (rs.next())
                        if (rs.getString("database").equals("pgbun"))
                            System.out.println("console_logins=" + rs.getLong("total_client_login_count"));
                }
            }
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SHOW NOTHING");
                System.out.println("error=none");
            } catch (java.sql.SQLException e) {
                System.out.println("error=" + e.getSQLState());
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SHOW VERSION")) {
                rs.next();
                System.out.println("version=" + rs.getString(1));
            }
        }
    }
}
