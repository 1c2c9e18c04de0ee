import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Op;
import org.apache.zookeeper.OpResult;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;

/**
 * ZooKeeper's Java client, one session: create, getData, setData, exists watches and multi,
 * each result printed as one line for the test to compare.
 *
 * <p>Usage: ZkClientCheck CONNECT BASE. BASE must exist. After the checks it prints "waiting",
 * with a data watch set on BASE/shared, and prints the event another client's write fires; then
 * "bye".
 */
public final class ZkClientCheck {
    private ZkClientCheck() {}

    private static void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    private static String text(byte[] data) {
        return data == null ? "null" : new String(data, StandardCharsets.UTF_8);
    }

    private static String describe(OpResult result) {
        if (result instanceof OpResult.CreateResult) {
            return "create " + ((OpResult.CreateResult) result).getPath();
        }
        if (result instanceof OpResult.SetDataResult) {
            return "set " + ((OpResult.SetDataResult) result).getStat().getVersion();
        }
        if (result instanceof OpResult.ErrorResult) {
            return "error " + ((OpResult.ErrorResult) result).getErr();
        }
        return result.getClass().getSimpleName();
    }

    public static void main(String[] args) throws Exception {
        String base = args[1];
        CountDownLatch connected = new CountDownLatch(1);
        BlockingQueue<WatchedEvent> events = new LinkedBlockingQueue<>();
        ZooKeeper zk =
                new ZooKeeper(
                        args[0],
                        10000,
                        event -> {
                            if (event.getState() == Watcher.Event.KeeperState.SyncConnected
                                    && event.getType() == Watcher.Event.EventType.None) {
                                connected.countDown();
                            }
                        });
        if (!connected.await(30, TimeUnit.SECONDS)) {
            say("error not connected");
            System.exit(2);
        }
        Watcher queue = events::add;
        String node = base + "/node";
        say("created " + zk.create(node, bytes("v0"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        String seq = zk.create(base + "/seq-", null, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL_SEQUENTIAL);
        say("created " + seq);
        Stat stat = new Stat();
        say("data " + text(zk.getData(node, false, stat)) + " version " + stat.getVersion());
        Stat updated = zk.setData(node, bytes("v1"), stat.getVersion());
        say("set version " + updated.getVersion() + " length " + updated.getDataLength());
        try {
            zk.setData(node, bytes("stale"), 0);
        } catch (KeeperException.BadVersionException e) {
            say("stale set " + e.code());
        }
        String other = base + "/other";
        say("exists " + zk.exists(other, queue));
        zk.create(other, bytes("o"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        WatchedEvent created = events.poll(30, TimeUnit.SECONDS);
        say("event " + created.getType() + " " + created.getPath());
        say("exists version " + zk.exists(other, queue).getVersion());
        zk.delete(other, -1);
        WatchedEvent deleted = events.poll(30, TimeUnit.SECONDS);
        say("event " + deleted.getType() + " " + deleted.getPath());

        List<OpResult> results =
                zk.multi(
                        Arrays.asList(
                                Op.check(node, 1),
                                Op.create(base + "/m", bytes("m"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                                Op.setData(node, bytes("v2"), 1)));
        StringBuilder line = new StringBuilder("multi");
        for (OpResult result : results) {
            line.append(" | ").append(describe(result));
        }
        say(line.toString());
        try {
            zk.multi(
                    Arrays.asList(
                            Op.create(base + "/never", null, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                            Op.check(node, 1)));
        } catch (KeeperException e) {
            StringBuilder failed = new StringBuilder("failed multi " + e.code());
            for (OpResult result : e.getResults()) {
                failed.append(" | ").append(describe(result));
            }
            say(failed.toString());
        }
        List<String> children = zk.getChildren(base, false);
        Collections.sort(children); // ZooKeeper's order is its hash set's; zkpy's is sorted
        say("children " + children);

        String shared = base + "/shared";
        zk.create(shared, bytes("s0"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk.getData(shared, queue, null);
        say("waiting");
        WatchedEvent changed = events.poll(60, TimeUnit.SECONDS);
        say("event " + (changed == null ? "none" : changed.getType() + " " + changed.getPath()));
        say("shared " + text(zk.getData(shared, false, null)));
        zk.close();
        say("bye");
    }
}
